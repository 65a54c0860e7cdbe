package sampler

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hopscope/hopscope/clock"
)

// Source is one thing to measure: a cgroup (relative to the hierarchy root,
// or absolute under /sys/fs/cgroup), or, when Cgroup is empty or cannot be
// read, the process PID through /proc (one process, not its children;
// labelled "proc", with the cgroup's error under Absent["cgroup"]).
type Source struct {
	Name   string `json:"name"`
	Cgroup string `json:"cgroup,omitempty"`
	PID    int    `json:"pid,omitempty"`
}

// Config sets how often the sampler reads.
type Config struct {
	// Interval between samples of CPU usage and current memory: the time
	// series (default 100 ms).
	Interval time.Duration
	// StatInterval between reads of the files a run's figures need less
	// often: the kernel's peak (it keeps the maximum itself), memory.stat
	// (the working set), OOM events, the v1 user/system split (default 1 s,
	// rounded to a multiple of Interval); PSI every 10th StatInterval. All
	// are read at the start and the end. memory.stat alone costs more than
	// the others together; reading it at 10 Hz for 100 cgroups would break
	// the 1%-of-a-core budget.
	StatInterval time.Duration
	// Reader is how quick ticks read CPU usage and current memory: "" (auto:
	// ReaderBPF where it loads, else ReaderFiles, saying why) or
	// ReaderFiles.
	Reader string
	// NoSeries keeps no time series (a long-running agent): WriteCSV then
	// writes only the header.
	NoSeries bool
}

// Sampler samples a changing set of sources on one timer.
type Sampler struct {
	cfg       Config
	statN     int
	mu        sync.Mutex
	h         *hierarchies
	hErr      error
	trackers  map[string]*tracker
	start     int64
	running   bool
	tick      int
	batch     *batch // nil: quick ticks read files
	reader    string // ReaderBPF or ReaderFiles
	readerWhy string // why not ReaderBPF
	replan    bool   // the set of sources changed since the batch's plan
	cancel    context.CancelFunc
	done      chan struct{}
	stopped   *Result
}

// New returns a sampler; add sources, then Start it.
func New(cfg Config) *Sampler {
	if cfg.Interval <= 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if cfg.StatInterval <= 0 {
		cfg.StatInterval = time.Second
	}
	n := int((cfg.StatInterval + cfg.Interval/2) / cfg.Interval)
	if n < 1 {
		n = 1
	}
	cfg.StatInterval = time.Duration(n) * cfg.Interval
	return &Sampler{cfg: cfg, statN: n, trackers: map[string]*tracker{}}
}

// Add starts watching src. It fails, with a message naming the path and what
// is missing, when nothing of the source can be read; a figure that alone is
// missing is marked absent in the result instead. Added while running, the
// source's run starts now.
func (s *Sampler) Add(src Source) error {
	if src.Name == "" {
		src.Name = src.Cgroup
		if src.Name == "" {
			src.Name = fmt.Sprintf("pid-%d", src.PID)
		}
	}
	t := newTracker(src)
	t.keep = !s.cfg.NoSeries
	switch {
	case src.Cgroup != "":
		s.mu.Lock()
		if s.h == nil && s.hErr == nil {
			s.h, s.hErr = loadHierarchies()
		}
		h, herr := s.h, s.hErr
		s.mu.Unlock()
		if herr != nil {
			return herr
		}
		if err := t.openCgroup(h); err != nil {
			t.close()
			if src.PID <= 0 {
				return err
			}
			// The cgroup cannot be read but the process can: fall back
			// to /proc, saying why.
			t = newTracker(src)
			t.keep = !s.cfg.NoSeries
			if perr := t.openProc(); perr != nil {
				t.close()
				return fmt.Errorf("%w; and /proc: %v", err, perr)
			}
			t.markAbsent("cgroup", err.Error()+": sampled /proc/PID instead")
		}
	case src.PID > 0:
		if err := t.openProc(); err != nil {
			t.close()
			return err
		}
	default:
		return fmt.Errorf("source %q: give a cgroup path or a PID", src.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped != nil {
		t.close()
		return errors.New("sampler already stopped")
	}
	if _, dup := s.trackers[src.Name]; dup {
		t.close()
		return fmt.Errorf("source %q added twice", src.Name)
	}
	s.trackers[src.Name] = t
	s.replan = true
	if s.running {
		t.begin(clock.Now())
	}
	return nil
}

// Remove stops watching the named source and returns its figures so far.
func (s *Sampler) Remove(name string) (Resources, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.trackers[name]
	if !ok {
		return Resources{}, false
	}
	delete(s.trackers, name)
	s.replan = true
	if s.running {
		t.sample(clock.Now(), s.start, all)
	}
	t.close()
	return t.resources(), true
}

// Start takes every source's first reading (resetting per-run peaks) and
// samples until ctx ends or Stop is called.
func (s *Sampler) Start(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running || s.stopped != nil {
		return
	}
	s.running = true
	s.reader, s.readerWhy = ReaderFiles, "asked for"
	if s.cfg.Reader != ReaderFiles {
		if b, err := newBatch(); err != nil {
			s.readerWhy = err.Error()
		} else {
			s.batch, s.reader, s.readerWhy, s.replan = b, ReaderBPF, "", true
		}
	}
	s.start = clock.Now()
	for _, t := range s.trackers {
		t.begin(s.start)
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.done = make(chan struct{})
	go s.loop(ctx)
}

func (s *Sampler) loop(ctx context.Context) {
	defer close(s.done)
	tk := time.NewTicker(s.cfg.Interval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		s.mu.Lock()
		s.tick++
		d := quick
		if s.tick%s.statN == 0 {
			d = stat
			if s.tick%(10*s.statN) == 0 {
				d = all
			}
		}
		if d < all && s.batch != nil {
			s.readBatch()
		}
		now := clock.Now()
		for _, t := range s.trackers {
			t.sampleWith(now, s.start, d, s.batch)
			if t.keep && !t.dead {
				t.series = append(t.series, t.point())
			}
		}
		s.mu.Unlock()
	}
}

// readBatch runs the batch for a quick tick, planning its walks first if
// the sources changed. On an error the sampler goes back to reading files
// and says why in the result. s.mu held.
func (s *Sampler) readBatch() {
	err := error(nil)
	if s.replan {
		dirs := map[string][]string{}
		for _, t := range s.trackers {
			if t.dead {
				continue
			}
			if t.cpuKey.id != 0 {
				dirs[t.cpuKey.mount] = append(dirs[t.cpuKey.mount], t.loc.v2)
			}
			if t.memKey.id != 0 {
				dir := t.loc.memory
				if t.memFrom == "v2" {
					dir = t.loc.v2
				}
				dirs[t.memKey.mount] = append(dirs[t.memKey.mount], dir)
			}
		}
		err = s.batch.plan(dirs)
		s.replan = false
	}
	if err == nil {
		err = s.batch.read()
	}
	if err != nil {
		s.batch.close()
		s.batch = nil
		s.reader, s.readerWhy = ReaderFiles, fmt.Sprintf("the BPF cgroup iterator failed at t=%.1fs: %v", float64(clock.Now()-s.start)/1e9, err)
	}
}

// Stop ends sampling, takes a last full reading of every source, and returns
// the run's result. Further calls return the same result.
func (s *Sampler) Stop() Result {
	s.mu.Lock()
	if s.stopped != nil {
		defer s.mu.Unlock()
		return *s.stopped
	}
	running := s.running
	s.mu.Unlock()
	if running {
		s.cancel()
		<-s.done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if running {
		now := clock.Now()
		for _, t := range s.trackers {
			t.sample(now, s.start, all)
			if t.keep && !t.dead {
				t.series = append(t.series, t.point())
			}
		}
	}
	r := s.result()
	for _, t := range s.trackers {
		t.close()
	}
	if s.batch != nil {
		s.batch.close()
		s.batch = nil
	}
	s.running = false
	s.stopped = &r
	return r
}

// Snapshot returns the figures so far without stopping (for an agent's
// metrics); it takes no new reading.
func (s *Sampler) Snapshot() Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.result()
	r.series = nil
	return r
}

func (s *Sampler) result() Result {
	mode := Unavailable
	if s.h != nil {
		mode = s.h.mode
	} else if m, err := DetectMode(); err == nil {
		mode = m
	}
	r := Result{Mode: mode, Reader: s.reader, ReaderNote: s.readerWhy, IntervalNs: s.cfg.Interval.Nanoseconds(), StatIntervalNs: s.cfg.StatInterval.Nanoseconds(),
		StartNs: s.start, EndNs: clock.Now(), series: map[string][]Sample{}}
	names := make([]string, 0, len(s.trackers))
	for n := range s.trackers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t := s.trackers[n]
		r.Sources = append(r.Sources, t.resources())
		r.series[n] = t.series
	}
	return r
}

// Sample is one point of a source's time series.
type Sample struct {
	TNs             int64 // clock.Now
	CPUUsec         int64 // since the run's start; -1 absent
	MemoryBytes     int64 // current usage; -1 absent
	WorkingSetBytes int64 // -1 when not read at this point (see StatInterval)
	PeakBytes       int64 // the kernel's peak so far; -1 absent or not read at this point
}

func (t *tracker) point() Sample {
	p := Sample{TNs: t.last.t, CPUUsec: none, MemoryBytes: t.last.mem, WorkingSetBytes: t.last.ws, PeakBytes: none}
	if t.last.d >= stat {
		p.PeakBytes = t.last.peak
	}
	if t.last.cpu != none && t.first.cpu != none {
		p.CPUUsec = t.last.cpu - t.first.cpu
	}
	return p
}

// Result is what one run measured, one entry per source.
type Result struct {
	Mode Mode `json:"mode"`
	// Reader is how CPU usage and current memory were read between the
	// StatInterval readings: ReaderBPF or ReaderFiles (ReaderNote: why).
	Reader         string      `json:"reader"`
	ReaderNote     string      `json:"reader_note,omitempty"`
	IntervalNs     int64       `json:"interval_ns"`
	StatIntervalNs int64       `json:"stat_interval_ns"`
	StartNs        int64       `json:"start_ns"`
	EndNs          int64       `json:"end_ns"`
	Sources        []Resources `json:"sources"`

	series map[string][]Sample
}

// Get returns the named source's figures.
func (r Result) Get(name string) (Resources, bool) {
	for _, s := range r.Sources {
		if s.Name == name {
			return s, true
		}
	}
	return Resources{}, false
}

// Series returns the named source's time series (nil after Snapshot or with
// NoSeries).
func (r Result) Series(name string) []Sample { return r.series[name] }

// Resources are one source's figures over the run. A figure that could not
// be read is null, with the reason under Absent; never a silent 0.
type Resources struct {
	Name   string   `json:"name"`
	Cgroup string   `json:"cgroup,omitempty"`
	PID    int      `json:"pid,omitempty"`
	Kind   string   `json:"kind"` // cgroup or proc
	Dirs   []string `json:"dirs,omitempty"`

	StartNs    int64 `json:"start_ns"`
	EndNs      int64 `json:"end_ns"` // last good reading
	DurationNs int64 `json:"duration_ns"`
	Samples    int   `json:"samples"`

	CPUUsec       *int64   `json:"cpu_usec"`
	UserUsec      *int64   `json:"user_usec"`
	SystemUsec    *int64   `json:"system_usec"`
	CPUSeconds    *float64 `json:"cpu_seconds"`
	AvgCores      *float64 `json:"avg_cores"`
	MaxCores      *float64 `json:"max_cores"` // over 1 s windows
	ThrottledUsec *int64   `json:"throttled_usec"`
	NrThrottled   *int64   `json:"nr_throttled"`

	// MemoryPeakBytes is the kernel's exact peak where it keeps one
	// (PeakSource memory.peak, memory.max_usage_in_bytes, VmHWM), else the
	// maximum of the samples (PeakSource "sampled"). PeakScope "run" means
	// reset at the run's start; "lifetime" means since the cgroup (process)
	// began, with MemoryPeakBeforeBytes the same figure at the run's start.
	MemoryPeakBytes       *int64 `json:"memory_peak_bytes"`
	PeakSource            string `json:"peak_source"`
	PeakScope             string `json:"peak_scope"`
	MemoryPeakBeforeBytes *int64 `json:"memory_peak_before_bytes,omitempty"`
	// SampledPeakBytes is the maximum of the sampled current usage: what a
	// poller sees, shown beside the exact peak.
	SampledPeakBytes   *int64 `json:"memory_sampled_peak_bytes"`
	MemoryCurrentBytes *int64 `json:"memory_current_bytes"` // at the last reading
	MaxWorkingSetBytes *int64 `json:"max_working_set_bytes"`
	OOMEvents          *int64 `json:"oom_events"` // OOM kills in the run

	PSICPUSomeUsec    *int64 `json:"psi_cpu_some_usec"`
	PSIMemorySomeUsec *int64 `json:"psi_memory_some_usec"`
	PSIMemoryFullUsec *int64 `json:"psi_memory_full_usec"`

	// Sources says where each figure came from: v2, v1 or proc.
	Sources map[string]string `json:"sources"`
	// Absent says, per figure, why it is missing.
	Absent map[string]string `json:"absent,omitempty"`
	// Errors: the source's sampling ended early ("cgroup ... removed at
	// t=1.3s"); the figures are those up to then.
	Errors []string `json:"errors,omitempty"`
}

func i64(v int64) *int64     { return &v }
func f64(v float64) *float64 { return &v }

func (t *tracker) resources() Resources {
	r := Resources{Name: t.src.Name, Cgroup: t.src.Cgroup, PID: t.src.PID, Kind: t.kind, Dirs: t.loc.dirs(),
		StartNs: t.first.t, EndNs: t.last.t, Samples: t.samples,
		Sources: map[string]string{}, Absent: map[string]string{}, Errors: t.errs}
	for k, v := range t.absent {
		r.Absent[k] = v
	}
	if t.kind == "proc" {
		r.Cgroup = ""
	}
	if !t.started {
		r.Absent["run"] = "not started"
		return r
	}
	f, l := t.first, t.last
	r.DurationNs = l.t - f.t
	delta := func(key, from string, a, b int64) *int64 {
		if a == none || b == none {
			if _, ok := r.Absent[key]; !ok && from != "" {
				r.Absent[key] = "not in " + from + " files"
			}
			return nil
		}
		r.Sources[key] = from
		return i64(b - a)
	}
	if t.cpuFile != nil {
		r.CPUUsec = delta("cpu_usec", t.cpuFrom, f.cpu, l.cpu)
		r.UserUsec = delta("user_usec", t.cpuFrom, f.user, l.user)
		r.SystemUsec = delta("system_usec", t.cpuFrom, f.sys, l.sys)
		if t.kind != "proc" {
			r.ThrottledUsec = delta("throttled_usec", t.cpuFrom, f.throttled, l.throttled)
			r.NrThrottled = delta("nr_throttled", t.cpuFrom, f.nrThrottled, l.nrThrottled)
			if r.ThrottledUsec == nil {
				r.Absent["throttled_usec"] = "cpu controller not enabled for this cgroup (v2 cpu.stat has no throttled_usec)"
				r.Absent["nr_throttled"] = r.Absent["throttled_usec"]
			}
		}
		if r.CPUUsec != nil {
			r.CPUSeconds = f64(float64(*r.CPUUsec) / 1e6)
			r.Sources["cpu_seconds"] = t.cpuFrom
			if r.DurationNs > 0 {
				r.AvgCores = f64(float64(*r.CPUUsec) * 1e3 / float64(r.DurationNs))
				r.Sources["avg_cores"] = t.cpuFrom
			} else {
				r.Absent["avg_cores"] = "no time between the first and last reading"
			}
			if t.maxCores >= 0 {
				r.MaxCores = f64(t.maxCores)
				r.Sources["max_cores"] = t.cpuFrom
			} else {
				r.Absent["max_cores"] = fmt.Sprintf("run shorter than the %s window", time.Duration(windowNs))
			}
		}
	}
	if t.memFile != nil {
		if l.mem != none {
			r.MemoryCurrentBytes = i64(l.mem)
			r.Sources["memory_current_bytes"] = t.memFrom
		}
		if t.sampledPeak != none {
			r.SampledPeakBytes = i64(t.sampledPeak)
			r.Sources["memory_sampled_peak_bytes"] = t.memFrom
		}
		if t.maxWS != none {
			r.MaxWorkingSetBytes = i64(t.maxWS)
			r.Sources["max_working_set_bytes"] = t.memFrom
		} else if _, ok := r.Absent["max_working_set_bytes"]; !ok {
			r.Absent["max_working_set_bytes"] = "no memory.stat reading with an inactive_file count"
		}
		switch {
		case t.peakSource != "" && l.peak != none:
			r.MemoryPeakBytes = i64(l.peak)
			r.PeakSource, r.PeakScope = t.peakSource, t.peakScope
			if t.peakScope == "lifetime" && t.peakBefore != none {
				r.MemoryPeakBeforeBytes = i64(t.peakBefore)
			}
			r.Sources["memory_peak_bytes"] = t.memFrom
		case t.sampledPeak != none:
			r.MemoryPeakBytes = i64(t.sampledPeak)
			r.PeakSource, r.PeakScope = "sampled", "run"
			r.Sources["memory_peak_bytes"] = t.memFrom
		}
		if t.eventsFile != nil {
			r.OOMEvents = delta("oom_events", t.memFrom, f.oom, l.oom)
		}
	}
	if t.psiCPUFile != nil {
		r.PSICPUSomeUsec = delta("psi_cpu_some_usec", "v2", f.psiCPU, l.psiCPU)
	}
	if t.psiMemFile != nil {
		r.PSIMemorySomeUsec = delta("psi_memory_some_usec", "v2", f.psiMemSome, l.psiMemSome)
		r.PSIMemoryFullUsec = delta("psi_memory_full_usec", "v2", f.psiMem, l.psiMem)
	}
	if len(r.Absent) == 0 {
		r.Absent = nil
	}
	return r
}

// CSVHeader is the first line WriteCSV writes.
var CSVHeader = []string{"t_ns", "t_s", "source", "cpu_usec", "cores", "memory_current_bytes", "working_set_bytes", "memory_peak_bytes"}

// WriteCSV writes the time series (resources.csv): one row per source and
// sample; t_s counts from the run's start, cpu_usec from the source's start,
// cores is the CPU rate since the source's previous row. An empty cell is an
// absent value (never 0).
func (r Result) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	num := func(v int64) string {
		if v == none {
			return ""
		}
		return strconv.FormatInt(v, 10)
	}
	for _, src := range r.Sources {
		var prev *Sample
		for i := range r.series[src.Name] {
			p := &r.series[src.Name][i]
			cores := ""
			if prev != nil && p.CPUUsec != none && prev.CPUUsec != none && p.TNs > prev.TNs {
				cores = strconv.FormatFloat(float64(p.CPUUsec-prev.CPUUsec)*1e3/float64(p.TNs-prev.TNs), 'f', 4, 64)
			}
			row := []string{strconv.FormatInt(p.TNs, 10), strconv.FormatFloat(float64(p.TNs-r.StartNs)/1e9, 'f', 3, 64),
				src.Name, num(p.CPUUsec), cores, num(p.MemoryBytes), num(p.WorkingSetBytes), num(p.PeakBytes)}
			if err := cw.Write(row); err != nil {
				return err
			}
			prev = p
		}
	}
	cw.Flush()
	return cw.Error()
}
