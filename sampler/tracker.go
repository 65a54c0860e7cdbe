package sampler

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// none marks a value that could not be read.
const none = -1

// reading is one look at a source's counters, in the units of the result;
// none where absent.
type reading struct {
	t                          int64 // clock.Now ns
	d                          depth // which files this reading took
	cpu, user, sys             int64 // usec, cumulative as the kernel keeps them
	throttled, nrThrottled     int64
	mem, ws, peak              int64 // bytes
	oom                        int64
	psiCPU, psiMemSome, psiMem int64 // usec (psiMem: memory "full")
}

func emptyReading() reading {
	return reading{cpu: none, user: none, sys: none, throttled: none, nrThrottled: none,
		mem: none, ws: none, peak: none, oom: none, psiCPU: none, psiMemSome: none, psiMem: none}
}

// point is a (time, cpu) pair for the max-cores window.
type point struct{ t, cpu int64 }

// tracker samples one source.
type tracker struct {
	src  Source
	kind string // "cgroup" or "proc"
	loc  location

	cpuFile, userFile, sysFile *kfile
	memFile, statFile          *kfile
	peakFile, eventsFile       *kfile
	psiCPUFile, psiMemFile     *kfile
	cpuFrom, memFrom           string // "v2", "v1", "proc"
	cpuV1                      bool   // cpuacct: ns files
	cpuKey, memKey             bkey   // where a batch has CPU / memory ({} if it cannot)
	inactiveKey                string

	peakSource, peakScope string
	peakBefore            int64

	started     bool
	first, last reading
	samples     int
	sampledPeak int64
	maxWS       int64
	win         []point
	maxCores    float64
	series      []Sample
	absent      map[string]string
	errs        []string
	dead        bool
	keep        bool // keep a time series
}

func newTracker(src Source) *tracker {
	return &tracker{src: src, absent: map[string]string{}, first: emptyReading(), last: emptyReading(),
		sampledPeak: none, maxWS: none, maxCores: -1, peakBefore: none}
}

func (t *tracker) markAbsent(figure, why string) {
	if _, ok := t.absent[figure]; !ok {
		t.absent[figure] = why
	}
}

// isCgroup tells whether dir is a cgroup directory, with a reason if not.
func isCgroup(dir string) (bool, string) {
	if dir == "" {
		return false, ""
	}
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, dir + " does not exist"
	}
	if err != nil {
		return false, err.Error()
	}
	if !st.IsDir() {
		return false, dir + " is not a directory, so not a cgroup"
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err != nil {
		return false, dir + " is not a cgroup (no cgroup.procs)"
	}
	return true, ""
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// openErr turns an open failure into a message that says what to do.
func openErr(err error) string {
	if errors.Is(err, fs.ErrPermission) {
		return err.Error() + ": run as root"
	}
	return err.Error()
}

// openCgroup opens the files of a cgroup source. It fails only when neither
// CPU nor memory can be read; a missing figure is marked absent.
func (t *tracker) openCgroup(h *hierarchies) error {
	l, err := h.locate(t.src.Cgroup)
	if err != nil {
		return err
	}
	t.loc, t.kind = l, "cgroup"
	v2ok, v2why := isCgroup(l.v2)
	memok, memwhy := isCgroup(l.memory)
	acctok, acctwhy := isCgroup(l.cpuacct)
	if !v2ok && !memok && !acctok {
		var why []string
		for _, w := range []string{v2why, memwhy, acctwhy} {
			if w != "" {
				why = append(why, w)
			}
		}
		return fmt.Errorf("cgroup %s: %s", t.src.Cgroup, strings.Join(why, "; "))
	}

	// CPU: v2 cpu.stat (core file, present without the cpu controller),
	// else v1 cpuacct.
	var cpuWhy []string
	if v2ok {
		if f, err := openK(filepath.Join(l.v2, "cpu.stat")); err != nil {
			cpuWhy = append(cpuWhy, openErr(err))
		} else {
			t.cpuFile, t.cpuFrom = f, "v2"
			t.cpuKey = batchKey(h.v2, l.v2)
		}
	} else if v2why != "" {
		cpuWhy = append(cpuWhy, v2why)
	}
	if t.cpuFile == nil && acctok {
		f, err := openK(filepath.Join(l.cpuacct, "cpuacct.usage"))
		if err != nil {
			cpuWhy = append(cpuWhy, openErr(err))
		} else {
			t.cpuFile, t.cpuFrom, t.cpuV1 = f, "v1", true
			t.userFile, _ = openK(filepath.Join(l.cpuacct, "cpuacct.usage_user"))
			t.sysFile, _ = openK(filepath.Join(l.cpuacct, "cpuacct.usage_sys"))
		}
	} else if t.cpuFile == nil && acctwhy != "" {
		cpuWhy = append(cpuWhy, acctwhy)
	}
	if t.cpuFile == nil {
		why := "no cpu.stat or cpuacct.usage: " + strings.Join(cpuWhy, "; ")
		for _, k := range []string{"cpu_usec", "user_usec", "system_usec", "avg_cores", "max_cores"} {
			t.markAbsent(k, why)
		}
	}

	// Memory: v2 where the memory controller is enabled, else v1.
	var memWhy []string
	if v2ok {
		if exists(filepath.Join(l.v2, "memory.current")) {
			if err := t.openMemV2(l.v2); err != nil {
				memWhy = append(memWhy, err.Error())
			} else {
				t.memKey = batchKey(h.v2, l.v2)
			}
		} else {
			memWhy = append(memWhy, "memory.current missing in "+l.v2+" (memory controller not enabled in the parent's cgroup.subtree_control)")
		}
	}
	if t.memFile == nil && memok {
		if err := t.openMemV1(l.memory); err != nil {
			memWhy = append(memWhy, err.Error())
		} else {
			t.memKey = batchKey(h.v1["memory"], l.memory)
		}
	} else if t.memFile == nil && memwhy != "" {
		memWhy = append(memWhy, memwhy)
	}
	if t.memFile == nil {
		why := "no memory files: " + strings.Join(memWhy, "; ")
		for _, k := range []string{"memory_current_bytes", "memory_peak_bytes", "max_working_set_bytes", "oom_events"} {
			t.markAbsent(k, why)
		}
	}

	// PSI (v2 only, CONFIG_PSI and not psi=0).
	if v2ok {
		t.psiCPUFile, _ = openK(filepath.Join(l.v2, "cpu.pressure"))
		t.psiMemFile, _ = openK(filepath.Join(l.v2, "memory.pressure"))
	}
	if t.psiCPUFile == nil {
		t.markAbsent("psi_cpu_some_usec", "no cpu.pressure (cgroup v2 with PSI)")
	}
	if t.psiMemFile == nil {
		t.markAbsent("psi_memory_some_usec", "no memory.pressure (cgroup v2 with PSI)")
		t.markAbsent("psi_memory_full_usec", "no memory.pressure (cgroup v2 with PSI)")
	}
	if t.cpuFile == nil && t.memFile == nil {
		return fmt.Errorf("cgroup %s: nothing to read: %s; %s", t.src.Cgroup, t.absent["cpu_usec"], t.absent["memory_current_bytes"])
	}
	return nil
}

func (t *tracker) openMemV2(dir string) error {
	f, err := openK(filepath.Join(dir, "memory.current"))
	if err != nil {
		return errors.New(openErr(err))
	}
	t.memFile, t.memFrom, t.inactiveKey = f, "v2", "inactive_file"
	if t.statFile, err = openK(filepath.Join(dir, "memory.stat")); err != nil {
		t.markAbsent("max_working_set_bytes", openErr(err))
	}
	if t.eventsFile, err = openK(filepath.Join(dir, "memory.events")); err != nil {
		t.markAbsent("oom_events", openErr(err))
	}
	p := filepath.Join(dir, "memory.peak")
	if !exists(p) {
		t.markAbsent("exact_peak", "memory.peak missing in "+dir+" (kernel < 5.19): the peak is the maximum of the samples")
		return nil
	}
	t.peakSource = "memory.peak"
	// Kernels >= 6.12 keep a peak per open file, reset by a write to it.
	t.openPeak(p, "a per-run memory.peak needs kernel 6.12+ and root")
	return nil
}

func (t *tracker) openMemV1(dir string) error {
	f, err := openK(filepath.Join(dir, "memory.usage_in_bytes"))
	if err != nil {
		return errors.New(openErr(err))
	}
	t.memFile, t.memFrom, t.inactiveKey = f, "v1", "total_inactive_file"
	if t.statFile, err = openK(filepath.Join(dir, "memory.stat")); err != nil {
		t.markAbsent("max_working_set_bytes", openErr(err))
	}
	if t.eventsFile, err = openK(filepath.Join(dir, "memory.oom_control")); err != nil {
		t.markAbsent("oom_events", openErr(err))
	}
	p := filepath.Join(dir, "memory.max_usage_in_bytes")
	t.peakSource = "memory.max_usage_in_bytes"
	t.openPeak(p, "needs root")
	return nil
}

// openPeak opens the exact peak file p: for writing where it can, so that
// begin can reset it and the peak is the run's, else read-only and labelled
// the cgroup's lifetime peak, with why in the result. Where p cannot be
// opened at all there is no exact peak (only the sampled one).
func (t *tracker) openPeak(p, needs string) {
	fd, werr := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if werr == nil {
		t.peakFile, t.peakScope = &kfile{path: p, fd: fd, buf: make([]byte, 64)}, "run"
		return
	}
	t.markAbsent("run_peak", fmt.Sprintf("cannot open %s for writing to reset it (%v; %s): the peak is the cgroup's lifetime peak", p, werr, needs))
	var err error
	if t.peakFile, err = openK(p); err != nil {
		t.markAbsent("exact_peak", openErr(err))
		t.peakSource = ""
		return
	}
	t.peakScope = "lifetime"
}

// openProc opens /proc/PID for a source without a cgroup of its own: CPU
// from stat (utime+stime, clock ticks), memory from status (VmRSS, VmHWM).
// It covers that one process, not its children.
func (t *tracker) openProc() error {
	t.kind = "proc"
	dir := fmt.Sprintf("/proc/%d", t.src.PID)
	if !exists(dir) {
		return fmt.Errorf("process %d not found (%s does not exist)", t.src.PID, dir)
	}
	var err error
	if t.cpuFile, err = openK(dir + "/stat"); err != nil {
		return errors.New(openErr(err))
	}
	if t.memFile, err = openK(dir + "/status"); err != nil {
		return errors.New(openErr(err))
	}
	t.cpuFrom, t.memFrom = "proc", "proc"
	t.peakSource, t.peakScope = "VmHWM", "lifetime"
	for _, k := range []string{"oom_events", "psi_cpu_some_usec", "psi_memory_some_usec", "psi_memory_full_usec", "throttled_usec", "nr_throttled"} {
		t.markAbsent(k, "not kept per process (source has no cgroup; /proc fallback)")
	}
	return nil
}

// begin takes the run's first reading and resets the per-run peak where the
// kernel allows it.
func (t *tracker) begin(now int64) {
	t.started = true
	switch {
	case t.kind == "proc":
		// Writing 5 to clear_refs resets VmHWM to the current RSS.
		if os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", t.src.PID), []byte("5"), 0) == nil {
			t.peakScope = "run"
		}
	case t.peakFile != nil && t.peakScope == "run":
		// memory.peak (6.12+): any write resets this fd's peak.
		// memory.max_usage_in_bytes (v1): writing 0 resets it (for every
		// reader of the cgroup, not only us).
		msg, need := "reset", "kernel 6.12+"
		if t.memFrom == "v1" {
			msg, need = "0", "root"
		}
		if _, err := unix.Pwrite(t.peakFile.fd, []byte(msg), 0); err != nil {
			t.peakScope = "lifetime"
			t.markAbsent("run_peak", fmt.Sprintf("cannot reset %s (%v; needs %s): the peak is the cgroup's lifetime peak", t.peakFile.path, err, need))
		}
	}
	r, err := t.read(now, all, nil)
	if err != nil {
		t.fail(now, now, err)
		return
	}
	t.first, t.last = r, r
	if t.peakScope == "lifetime" {
		t.peakBefore = r.peak
	}
	t.observe(r)
	if t.keep {
		t.series = append(t.series, t.point())
	}
}

// depth says which files a reading takes.
type depth int

const (
	// quick: CPU usage and current memory, at every Interval.
	quick depth = iota
	// stat adds the files a run's figures need at a coarser pace: the
	// kernel's peak (it keeps the maximum itself), memory.stat (working
	// set), OOM events, the v1 user/system split. At every StatInterval.
	stat
	// all adds PSI: at the start and end, every 10th StatInterval between.
	all
)

// read takes a reading of the files depth d asks for; the others keep their
// last value, except the working set, which is only valid where read.
func (t *tracker) read(now int64, d depth, fromBatch *batch) (reading, error) {
	full := d >= stat
	r := t.last
	r.t, r.d = now, d
	if !full {
		r.ws = none
	}
	// Between full readings (d < all) CPU usage and current memory come
	// from the batch where it has them; the files are read for the rest
	// (cpu.stat's user/system split then waits for the next full reading),
	// and for a cgroup the batch did not see.
	cpuDone, memDone := false, false
	if d < all && fromBatch != nil {
		if v, ok := fromBatch.vals[t.cpuKey]; ok && t.cpuKey.id != 0 && v.flushed {
			r.cpu, cpuDone = v.cpuNs/1000, true
		}
		if v, ok := fromBatch.vals[t.memKey]; ok && t.memKey.id != 0 && v.memBytes != none {
			r.mem, memDone = v.memBytes, true
		}
	}
	if t.cpuFile != nil && !cpuDone {
		b, err := t.cpuFile.read()
		if err != nil {
			return r, err
		}
		switch {
		case t.kind == "proc":
			u, s, ok := procCPU(b)
			if !ok {
				return r, fmt.Errorf("parse %s: unexpected format", t.cpuFile.path)
			}
			r.user, r.sys, r.cpu = u, s, u+s
		case t.cpuV1:
			v, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
			if err != nil {
				return r, fmt.Errorf("parse %s: %w", t.cpuFile.path, err)
			}
			r.cpu = v / 1000
			if full {
				r.user, r.sys = readNs(t.userFile), readNs(t.sysFile)
			}
		default:
			v, ok := field(b, "usage_usec")
			if !ok {
				return r, fmt.Errorf("%s has no usage_usec", t.cpuFile.path)
			}
			r.cpu = v
			r.user, _ = fieldOr(b, "user_usec")
			r.sys, _ = fieldOr(b, "system_usec")
			r.throttled, _ = fieldOr(b, "throttled_usec")
			r.nrThrottled, _ = fieldOr(b, "nr_throttled")
		}
	}
	if t.memFile != nil && !memDone {
		b, err := t.memFile.read()
		if err != nil {
			return r, err
		}
		if t.kind == "proc" {
			rss, ok1 := statusKB(b, "VmRSS:")
			hwm, ok2 := statusKB(b, "VmHWM:")
			if !ok1 || !ok2 {
				return r, fmt.Errorf("%s has no VmRSS/VmHWM (a kernel thread or a zombie)", t.memFile.path)
			}
			r.mem, r.ws, r.peak = rss, rss, hwm
		} else {
			v, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
			if err != nil {
				return r, fmt.Errorf("parse %s: %w", t.memFile.path, err)
			}
			r.mem = v
		}
	}
	if full && t.kind != "proc" && t.memFile != nil {
		if t.peakFile != nil {
			p, err := t.peakFile.readInt()
			if err != nil {
				return r, err
			}
			r.peak = p
		}
		if t.statFile != nil {
			b, err := t.statFile.read()
			if err != nil {
				return r, err
			}
			if in, ok := field(b, t.inactiveKey); ok {
				r.ws = max(r.mem-in, 0)
			}
		}
	}
	// OOM events and PSI count up; the run needs their first and last
	// values, so they are read with the rest only every 10th StatInterval.
	if d >= all && t.eventsFile != nil {
		if b, err := t.eventsFile.read(); err == nil {
			if v, ok := field(b, "oom_kill"); ok {
				r.oom = v
			}
		}
	}
	if d >= all && t.psiCPUFile != nil {
		if b, err := t.psiCPUFile.read(); err == nil {
			r.psiCPU, _ = psiTotalOr(b, "some")
		}
	}
	if d >= all && t.psiMemFile != nil {
		if b, err := t.psiMemFile.read(); err == nil {
			r.psiMemSome, _ = psiTotalOr(b, "some")
			r.psiMem, _ = psiTotalOr(b, "full")
		}
	}
	return r, nil
}

func fieldOr(b []byte, key string) (int64, bool) {
	if v, ok := field(b, key); ok {
		return v, true
	}
	return none, false
}

func psiTotalOr(b []byte, kind string) (int64, bool) {
	if v, ok := psiTotal(b, kind); ok {
		return v, true
	}
	return none, false
}

func readNs(f *kfile) int64 {
	if f == nil {
		return none
	}
	v, err := f.readInt()
	if err != nil {
		return none
	}
	return v / 1000
}

// clockTicks is USER_HZ, fixed at 100 in the kernel's ABI.
const clockTicks = 100

// procCPU parses utime and stime (fields 14 and 15) of /proc/PID/stat.
func procCPU(b []byte) (user, sys int64, ok bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, 0, false
	}
	u, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	s, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return u * 1e6 / clockTicks, s * 1e6 / clockTicks, true
}

// statusKB returns a "Key:   123 kB" line of /proc/PID/status in bytes.
func statusKB(b []byte, key string) (int64, bool) {
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return 0, false
	}
	rest := b[i+len(key):]
	if j := bytes.IndexByte(rest, '\n'); j >= 0 {
		rest = rest[:j]
	}
	f := bytes.Fields(rest)
	if len(f) == 0 {
		return 0, false
	}
	v, err := strconv.ParseInt(string(f[0]), 10, 64)
	return v * 1024, err == nil
}

// sample takes one reading and folds it in.
func (t *tracker) sample(now, start int64, d depth) { t.sampleWith(now, start, d, nil) }

// sampleWith samples, taking a quick tick's CPU and memory from fromBatch
// where it has them (fromBatch may be nil).
func (t *tracker) sampleWith(now, start int64, d depth, fromBatch *batch) {
	if t.dead {
		return
	}
	r, err := t.read(now, d, fromBatch)
	if err != nil {
		t.fail(now, start, err)
		return
	}
	t.last = r
	t.observe(r)
}

func (t *tracker) observe(r reading) {
	t.samples++
	if r.mem != none && r.mem > t.sampledPeak {
		t.sampledPeak = r.mem
	}
	if r.ws != none && r.ws > t.maxWS {
		t.maxWS = r.ws
	}
	if r.cpu != none {
		t.window(point{r.t, r.cpu})
	}
}

// window keeps the points of the last windowNs and updates the maximum CPU
// rate over a full window.
var windowNs int64 = 1e9

func (t *tracker) window(p point) {
	t.win = append(t.win, p)
	// Drop points while the next one is still at least a window old.
	for len(t.win) > 1 && p.t-t.win[1].t >= windowNs {
		t.win = t.win[1:]
	}
	if o := t.win[0]; p.t-o.t >= windowNs {
		if c := float64(p.cpu-o.cpu) * 1e3 / float64(p.t-o.t); c > t.maxCores {
			t.maxCores = c
		}
	}
}

// fail ends the source's sampling with a marked error.
func (t *tracker) fail(now, start int64, err error) {
	t.dead = true
	at := float64(now-start) / 1e9
	switch {
	case t.kind == "cgroup" && gone(err):
		t.errs = append(t.errs, fmt.Sprintf("cgroup %s removed at t=%.1fs (%v)", t.src.Cgroup, at, err))
	case t.kind == "proc" && gone(err):
		t.errs = append(t.errs, fmt.Sprintf("process %d exited at t=%.1fs", t.src.PID, at))
	default:
		t.errs = append(t.errs, fmt.Sprintf("sampling stopped at t=%.1fs: %v", at, err))
	}
}

func (t *tracker) close() {
	for _, f := range []*kfile{t.cpuFile, t.userFile, t.sysFile, t.memFile, t.statFile, t.peakFile, t.eventsFile, t.psiCPUFile, t.psiMemFile} {
		f.close()
	}
}

// batchKey is a cgroup's key in a batch, or {} where its directory cannot
// be stat'ed (the files are then read).
func batchKey(mount, dir string) bkey {
	id, err := cgroupID(dir)
	if err != nil || mount == "" {
		return bkey{}
	}
	return bkey{mount, id}
}
