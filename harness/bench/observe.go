package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hopscope/hopscope/hist"
	"github.com/hopscope/hopscope/probe"
	"github.com/hopscope/hopscope/reqid"
	"github.com/hopscope/hopscope/sampler"
	"github.com/hopscope/hopscope/target"
)

// Sources names the sampler sources of targets: "<pod>/proxy" for a
// sidecar's cgroup, "<pod>/app" for the app's, where <pod> is the target's
// role (client, server) when no other target has it, else its name.
func Sources(targets []target.Target) []sampler.Source {
	roles := map[target.Role]int{}
	for _, t := range targets {
		roles[t.Role]++
	}
	var out []sampler.Source
	for _, t := range targets {
		pod := t.String()
		if t.Role != "" && roles[t.Role] == 1 {
			pod = string(t.Role)
		}
		if t.ProxyCgroup != "" || (t.HasProxy() && t.ProxyPID != 0) {
			out = append(out, sampler.Source{Name: pod + "/proxy", Cgroup: t.ProxyCgroup, PID: t.ProxyPID})
		}
		if t.AppCgroup != "" {
			out = append(out, sampler.Source{Name: pod + "/app", Cgroup: t.AppCgroup})
		}
	}
	return out
}

// SamplerObserver samples each target's proxy and app cgroups during a run:
// run.json's "resources", resources.csv.
type SamplerObserver struct {
	Config sampler.Config
	s      *sampler.Sampler
	cancel context.CancelFunc
}

func (o *SamplerObserver) Begin(ctx context.Context, run *Run, targets []target.Target) {
	o.s = sampler.New(o.Config)
	var absent []string
	n := 0
	for _, src := range Sources(targets) {
		if err := o.s.Add(src); err != nil {
			absent = append(absent, err.Error())
			continue
		}
		n++
	}
	if n == 0 && len(absent) == 0 {
		absent = append(absent, "no target has a cgroup or process to sample")
	}
	run.ResourcesAbsent = strings.Join(absent, "; ")
	if n == 0 {
		o.s = nil
		return
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	o.cancel = cancel
	o.s.Start(sctx)
}

func (o *SamplerObserver) End(run *Run, dir string) {
	if o.s == nil {
		return
	}
	res := o.s.Stop()
	o.cancel()
	o.s = nil
	run.ResourcesWindowNs = res.EndNs - res.StartNs
	run.Resources = map[string]json.RawMessage{}
	for _, src := range res.Sources {
		b, err := json.Marshal(src)
		if err != nil {
			continue
		}
		run.Resources[src.Name] = b
	}
	f, err := os.Create(filepath.Join(dir, ResourcesCSV))
	if err != nil {
		run.ResourcesAbsent = joinNonEmpty(run.ResourcesAbsent, "resources.csv: "+err.Error())
		return
	}
	defer f.Close()
	if err := res.WriteCSV(f); err != nil {
		run.ResourcesAbsent = joinNonEmpty(run.ResourcesAbsent, "resources.csv: "+err.Error())
	}
}

func (o *SamplerObserver) Close() {
	if o.s != nil {
		o.s.Stop()
		o.cancel()
	}
}

func joinNonEmpty(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// ProbeObserver attaches the eBPF probe to each run's targets: run.json's
// "hops" and "probe", hops.hlog. One probe is loaded for the experiment and
// each run attaches, resets the window, reads the result and detaches.
type ProbeObserver struct {
	Mode   string       // ProbeAuto, ProbeOn, ProbeOff
	Config probe.Config // attach mode, capture size, ...
	// Join pairs each request's timeline with the load generator's record
	// of it (the run directory's records.csv, same CLOCK_MONOTONIC), adding
	// the client's own time as the hops "client/send" (write issued to the
	// first packet seen) and "client/recv" (last packet seen to the first
	// response byte read). It keeps every timeline of a run in memory:
	// Config.JoinRecords says when that is affordable.
	Join bool

	once     sync.Once
	p        *probe.Probe
	startErr error
	attached []string
	begun    time.Time
	notes    []string
}

func (o *ProbeObserver) start() {
	o.once.Do(func() {
		// The probe lives for the experiment, not for the caller's
		// context: after Ctrl-C the run in progress still reads it.
		cfg := o.Config
		cfg.KeepTimelines = cfg.KeepTimelines || o.Join
		o.p, o.startErr = probe.Start(context.Background(), cfg)
		if o.startErr != nil {
			o.notes = append(o.notes, "probe: "+o.startErr.Error())
		}
	})
}

func (o *ProbeObserver) Begin(ctx context.Context, run *Run, targets []target.Target) {
	if o.Mode == ProbeOff {
		run.Probe = ProbeHealth{State: ProbeStateOff, Reason: "--probe=off"}
		return
	}
	o.start()
	if o.startErr != nil {
		// It did not load: the same for every run (privileges, kernel).
		run.Probe = ProbeHealth{State: ProbeStateUnavailable, Reason: o.startErr.Error()}
		return
	}
	o.attached = o.attached[:0]
	for _, t := range targets {
		if t.Unattributable != "" {
			continue
		}
		if err := o.p.Attach(t); err != nil {
			o.detach()
			run.Probe = ProbeHealth{State: ProbeStateFailed, Reason: fmt.Sprintf("attach %s: %v", t, err)}
			return
		}
		o.attached = append(o.attached, t.String())
	}
	o.p.Reset()
	o.begun = time.Now()
	run.Probe = ProbeHealth{State: ProbeStateOK}
}

func (o *ProbeObserver) detach() {
	for _, name := range o.attached {
		o.p.Detach(name)
	}
	o.attached = o.attached[:0]
}

func (o *ProbeObserver) End(run *Run, dir string) {
	if o.p == nil || run.Probe.State != ProbeStateOK {
		return
	}
	res := o.p.Result()
	ended := time.Now()
	o.detach()
	h := res.Probe
	detail, _ := json.Marshal(h)
	run.Probe = ProbeHealth{
		State: ProbeStateOK, Mode: h.Mode, Events: int64(h.Events), Drops: int64(h.Drops),
		Unmatched: int64(h.Unmatched), Detail: detail,
	}
	if h.Error != "" {
		run.Probe.State, run.Probe.Reason = ProbeStateFailed, h.Error
	}
	if o.Join {
		o.join(run, &res, filepath.Join(dir, RecordsFile))
	}
	run.SetHopHists(res.Hists)
	if len(res.Hists) == 0 {
		run.Probe.Reason = joinNonEmpty(run.Probe.Reason, "no request was seen at every point of any hop")
		return
	}
	if err := writeHops(filepath.Join(dir, HopsHlog), res.Hists, o.begun, ended); err != nil {
		run.Probe.Reason = joinNonEmpty(run.Probe.Reason, err.Error())
	}
}

// WantsRecords tells the runner to have the load generator write its
// per-request records.
func (o *ProbeObserver) WantsRecords() bool { return o.Join && o.Mode != ProbeOff }

// join adds the client's own time to the hops from the load generator's
// records.
func (o *ProbeObserver) join(run *Run, res *probe.Result, records string) {
	f, err := os.Open(records)
	if err != nil {
		run.Probe.Reason = joinNonEmpty(run.Probe.Reason, "no join with the load records: "+err.Error())
		return
	}
	defer f.Close()
	recs, err := reqid.ReadRecords(f)
	if err != nil {
		run.Probe.Reason = joinNonEmpty(run.Probe.Reason, "load records: "+err.Error())
	}
	wfs, unjoined := probe.Join(res.Timelines, recs)
	run.Probe.Joined, run.Probe.Unjoined = int64(len(wfs)), int64(unjoined)
	if len(wfs) == 0 {
		return
	}
	if res.Hists == nil {
		res.Hists = probe.Hists{}
	}
	for _, name := range []string{ClientSend, ClientRecv} {
		res.Hists[name] = hist.New()
	}
	for _, w := range wfs {
		for _, seg := range w.Segments {
			if h := res.Hists[seg.Name]; h != nil && (seg.Name == ClientSend || seg.Name == ClientRecv) {
				hist.Record(h, seg.To-seg.From)
			}
		}
	}
}

// writeHops writes one interval per hop, tagged with the hop's name.
func writeHops(path string, hs probe.Hists, from, to time.Time) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("hops.hlog: %w", err)
	}
	defer f.Close()
	lw, err := hist.NewLogWriter(f, from, "hopscope probe: per-hop latency (ns), one tag per hop")
	if err != nil {
		return err
	}
	names := make([]string, 0, len(hs))
	for name := range hs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := lw.Interval(hs[name], name, from, to); err != nil {
			return err
		}
	}
	return f.Close()
}

func (o *ProbeObserver) Close() {
	if o.p != nil {
		o.p.Close()
	}
}

// Notes are experiment-level remarks (why the probe could not start).
func (o *ProbeObserver) Notes() []string { return o.notes }
