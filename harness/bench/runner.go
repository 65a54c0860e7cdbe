package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/hopscope/hopscope/harness/load"
	"github.com/hopscope/hopscope/hist"
	"github.com/hopscope/hopscope/target"
)

// LoadSpec is one run's load: the rate and windows, and where the load
// generator writes its outputs (all inside the run's directory, except
// Records, a scratch file the probe may join and the runner deletes).
type LoadSpec struct {
	RateRPS  int
	Duration time.Duration
	Warmup   time.Duration
	JSON     string // --json: load.Result
	Hlog     string // --hlog: client.hlog
	Records  string // --records: per-request records
}

// Backend builds scenarios where load can run: the lab on this machine, or
// a Kubernetes cluster. The same plan, runner and report serve both.
type Backend interface {
	// Name is "lab", "kube", ...
	Name() string
	// Environment adds what the backend knows to env: proxy versions,
	// cgroup mode, cluster details.
	Environment(ctx context.Context, env *Environment)
	// Check says why scenario s cannot run here (proxy not installed,
	// template that does not render), naming the fix; nil when it can.
	// It starts nothing.
	Check(s Scenario) error
	// Up builds s afresh for one run (the published method reinstalls
	// everything between runs). An error leaves nothing behind.
	Up(ctx context.Context, s Scenario) (Deployment, error)
	// Cleanup removes whatever a killed earlier experiment left behind.
	Cleanup(ctx context.Context) error
}

// Deployment is one built scenario.
type Deployment interface {
	// Targets are the pods to watch (client and server).
	Targets() []target.Target
	// Load drives the scenario with the load generator from the client pod
	// and returns its result. When ctx ends it stops the generator so that
	// it writes what it measured (Result.Interrupted) and returns that.
	Load(ctx context.Context, spec LoadSpec) (*load.Result, error)
	// Down tears the scenario down completely.
	Down(ctx context.Context) error
}

// Observer watches runs besides the load generator: the probe (hops), the
// sampler (resources). One Observer serves a whole experiment.
type Observer interface {
	// Begin starts watching one run's targets. Failing, it records in run
	// why its part is absent; it never stops the run.
	Begin(ctx context.Context, run *Run, targets []target.Target)
	// End stops watching, fills its part of run and writes its files into
	// dir (hops.hlog, resources.csv).
	End(run *Run, dir string)
	// Close releases what the observer holds.
	Close()
}

// Runner runs experiments.
type Runner struct {
	Backend   Backend
	Observers []Observer
	// Version is hopscope's version, for the environment.
	Version string
	// Render writes the human-readable files (summary.md, report.html)
	// from the experiment; package report's Write. nil writes none.
	Render func(dir string, e *Experiment) error
	// Log receives one line per run and per notable event; nil is quiet.
	Log io.Writer
}

func (r *Runner) logf(format string, args ...any) {
	if r.Log != nil {
		fmt.Fprintf(r.Log, format+"\n", args...)
	}
}

// ErrInterrupted is returned (wrapped) when the context ended the
// experiment early; what was measured is written.
var ErrInterrupted = errors.New("interrupted")

// Run runs cfg's plan, writing results into out as it goes (every run's
// files as soon as it ends; experiment.json and the rendered files at the
// end, also after an interruption or a failure). It returns the experiment
// with the error that stopped it, if any.
func (r *Runner) Run(ctx context.Context, cfg Config, out string) (*Experiment, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = filepath.Base(filepath.Clean(out))
	}
	if err := prepareDir(out); err != nil {
		return nil, err
	}
	e := &Experiment{Name: cfg.Name, Config: cfg, Started: time.Now(), Runs: []RunBrief{}, Cells: []Cell{}}
	e.Environment = CollectEnvironment(r.Version)
	e.Environment.Backend = r.Backend.Name()
	r.Backend.Environment(ctx, &e.Environment)

	// Cleanup uses its own context: after Ctrl-C it must still run.
	bg := context.WithoutCancel(ctx)
	if err := r.Backend.Cleanup(bg); err != nil {
		return nil, fmt.Errorf("remove leftovers of an earlier run: %w", err)
	}
	defer func() {
		for _, o := range r.Observers {
			o.Close()
		}
		if err := r.Backend.Cleanup(bg); err != nil {
			r.logf("cleanup: %v", err)
		}
	}()

	skipped := map[string]string{}
	for _, s := range cfg.Scenarios {
		if err := r.Backend.Check(s); err != nil {
			skipped[s.Name] = err.Error()
			e.Skipped = append(e.Skipped, Skip{Scenario: s.Name, Reason: err.Error()})
			r.logf("skip %s: %v", s.Name, err)
		}
	}

	var runs []*Run
	var stopErr error
	plan := cfg.Plan()
	for i, spec := range plan {
		if ctx.Err() != nil {
			stopErr = fmt.Errorf("%w after %d of %d runs", ErrInterrupted, len(runs), len(plan))
			break
		}
		if _, skip := skipped[spec.Scenario.Name]; skip {
			continue
		}
		run, setupErr := r.runOne(ctx, cfg, spec, out)
		runs = append(runs, run)
		if setupErr != nil && ctx.Err() == nil {
			// The same setup would fail again: skip the scenario's other runs.
			reason := "setup failed: " + setupErr.Error()
			skipped[spec.Scenario.Name] = reason
			e.Skipped = append(e.Skipped, Skip{Scenario: spec.Scenario.Name, Reason: reason + " (its remaining runs skipped)"})
		}
		left := 0
		for _, s := range plan[i+1:] {
			if _, skip := skipped[s.Scenario.Name]; !skip {
				left++
			}
		}
		eta := ""
		if left > 0 {
			per := time.Since(e.Started) / time.Duration(len(runs))
			eta = fmt.Sprintf(" (%d runs, about %v, to go)", left, (per * time.Duration(left)).Round(time.Second))
		}
		r.logf("[%d/%d] %s%s", i+1, len(plan), runLine(run), eta)
		// A checkpoint: if this process is killed, the results so far
		// still read as an experiment.
		if left > 0 {
			r.analyze(e, runs)
			e.Status = fmt.Sprintf("running: %d of %d runs done", len(runs), len(runs)+left)
			if err := WriteJSON(filepath.Join(out, ExperimentFile), e); err != nil {
				r.logf("checkpoint: %v", err)
			}
		}
		if cfg.Probe == ProbeOn && run.Probe.State == ProbeStateUnavailable {
			stopErr = fmt.Errorf("--probe=on, but the probe is unavailable: %s", run.Probe.Reason)
			break
		}
	}

	r.analyze(e, runs)
	switch {
	case stopErr == nil:
		e.Status = "complete"
	case errors.Is(stopErr, ErrInterrupted):
		e.Status = "interrupted"
	default:
		e.Status = "stopped: " + stopErr.Error()
	}
	if ctx.Err() != nil && stopErr == nil {
		e.Status = "interrupted"
		stopErr = fmt.Errorf("%w during the last run", ErrInterrupted)
	}
	if err := WriteJSON(filepath.Join(out, ExperimentFile), e); err != nil {
		return e, err
	}
	if r.Render != nil {
		if err := r.Render(out, e); err != nil {
			return e, err
		}
	}
	return e, stopErr
}

// analyze fills e's aggregates from the runs so far.
func (r *Runner) analyze(e *Experiment, runs []*Run) {
	e.Cells, e.Runs, e.Notes = Analyze(e.Config, runs)
	for _, o := range r.Observers {
		if n, ok := o.(interface{ Notes() []string }); ok {
			e.Notes = append(e.Notes, n.Notes()...)
		}
	}
	e.Finished = time.Now()
	e.WallTimeNs = int64(e.Finished.Sub(e.Started))
}

// runOne builds the scenario, drives and watches it, tears it down and
// writes the run's files. A setup failure is returned besides the run
// (which records it).
func (r *Runner) runOne(ctx context.Context, cfg Config, spec RunSpec, out string) (*Run, error) {
	run := &Run{
		ID: spec.ID(), Scenario: spec.Scenario.Name, Proxy: spec.Scenario.Proxy, RateRPS: spec.RateRPS, N: spec.N,
		Backend: r.Backend.Name(), Started: time.Now(), Probe: ProbeHealth{State: ProbeStateOff},
	}
	if cfg.Probe != ProbeOff {
		run.Probe = ProbeHealth{State: ProbeStateUnavailable, Reason: "no probe in this build"}
	}
	dir := filepath.Join(out, RunsDir, run.ID)
	finish := func() {
		run.Finished = time.Now()
		cfg.Rules.Check(run, spec.RateRPS, cfg.Probe)
		if err := WriteJSON(filepath.Join(dir, RunFile), run); err != nil {
			r.logf("%s: %v", run.ID, err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		run.ClientError = err.Error()
		return run, err
	}
	setup := time.Now()
	dep, err := r.Backend.Up(ctx, spec.Scenario)
	if err != nil {
		run.SetupNs = int64(time.Since(setup))
		run.InvalidReasons = append(run.InvalidReasons, "setup: "+err.Error())
		run.ClientError = "not run: the scenario could not be set up"
		if cfg.Probe != ProbeOff {
			run.Probe = ProbeHealth{State: ProbeStateFailed, Reason: "not run: setup failed"}
		}
		finish()
		return run, err
	}
	targets := dep.Targets()
	for _, o := range r.Observers {
		o.Begin(ctx, run, targets)
	}
	run.SetupNs = int64(time.Since(setup))
	ls := LoadSpec{
		RateRPS: spec.RateRPS, Duration: time.Duration(cfg.Duration), Warmup: time.Duration(cfg.Warmup),
		JSON: filepath.Join(dir, "load.json"), Hlog: filepath.Join(dir, ClientHlog),
	}
	for _, o := range r.Observers {
		if w, ok := o.(interface{ WantsRecords() bool }); ok && w.WantsRecords() {
			ls.Records = filepath.Join(dir, RecordsFile)
		}
	}
	res, err := dep.Load(ctx, ls)
	if err != nil {
		run.ClientError = err.Error()
	}
	if res != nil {
		// hist.Encoded cannot marshal a missing histogram: an empty one
		// says the same (count 0).
		for _, e := range []*hist.Encoded{&res.LatencyHist, &res.ServiceTimeHist} {
			if e.H == nil {
				e.H = hist.New()
			}
		}
	}
	run.Client = res
	teardown := time.Now()
	for _, o := range r.Observers {
		o.End(run, dir)
	}
	if err := dep.Down(context.WithoutCancel(ctx)); err != nil {
		run.InvalidReasons = append(run.InvalidReasons, "tear down: "+err.Error())
	}
	run.TeardownNs = int64(time.Since(teardown))
	// The load's JSON is in run.json's "client"; the records were for the
	// probe's join. Neither is part of the results.
	os.Remove(ls.JSON)
	if ls.Records != "" {
		os.Remove(ls.Records)
	}
	finish()
	return run, nil
}

func runLine(run *Run) string {
	var b strings.Builder
	b.WriteString(run.ID + ": ")
	if c := run.Client; c != nil && c.Latency.Count > 0 {
		fmt.Fprintf(&b, "p50 %.3f ms, p99 %.3f ms, max %.3f ms, %.1f RPS", float64(c.Latency.P50)/1e6,
			float64(c.Latency.P99)/1e6, float64(c.Latency.Max)/1e6, c.AchievedRPS)
	} else {
		b.WriteString("no latency")
	}
	if run.Probe.State == ProbeStateOK {
		fmt.Fprintf(&b, ", probe %s %d events %d drops", run.Probe.Mode, run.Probe.Events, run.Probe.Drops)
	}
	if run.Valid {
		b.WriteString(", valid")
	} else {
		b.WriteString(", INVALID: " + strings.Join(run.InvalidReasons, "; "))
	}
	return b.String()
}

// prepareDir makes out, removing only what an earlier experiment wrote
// there (its files and run directories), never anything else.
func prepareDir(out string) error {
	if err := os.MkdirAll(filepath.Join(out, RunsDir), 0o755); err != nil {
		return fmt.Errorf("results directory: %w", err)
	}
	for _, f := range []string{ExperimentFile, SummaryFile, ReportFile} {
		if err := os.Remove(filepath.Join(out, f)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("results directory: %w", err)
		}
	}
	ents, err := os.ReadDir(filepath.Join(out, RunsDir))
	if err != nil {
		return fmt.Errorf("results directory: %w", err)
	}
	for _, ent := range ents {
		d := filepath.Join(out, RunsDir, ent.Name())
		if _, err := os.Stat(filepath.Join(d, RunFile)); err == nil {
			if err := os.RemoveAll(d); err != nil {
				return fmt.Errorf("results directory: remove earlier run: %w", err)
			}
		}
	}
	return nil
}

// WriteJSON writes v indented, through a temporary file so that a reader
// never sees half a document.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// ReadRun reads a run directory back: run.json, and its per-hop histograms
// from hops.hlog when there is one.
func ReadRun(dir string) (*Run, error) {
	b, err := os.ReadFile(filepath.Join(dir, RunFile))
	if err != nil {
		return nil, err
	}
	var run Run
	if err := json.Unmarshal(b, &run); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, RunFile), err)
	}
	f, err := os.Open(filepath.Join(dir, HopsHlog))
	if err == nil {
		defer f.Close()
		hs, err := hist.ReadLog(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, HopsHlog), err)
		}
		if len(hs) > 0 {
			run.hopHists = map[string]*hdrhistogram.Histogram{}
			for _, h := range hs {
				if run.hopHists[h.Tag()] == nil {
					run.hopHists[h.Tag()] = hist.New()
				}
				run.hopHists[h.Tag()].Merge(h)
			}
		}
	}
	return &run, nil
}

// ReadExperiment reads experiment.json and every run it lists.
func ReadExperiment(out string) (*Experiment, []*Run, error) {
	b, err := os.ReadFile(filepath.Join(out, ExperimentFile))
	if err != nil {
		return nil, nil, err
	}
	var e Experiment
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", ExperimentFile, err)
	}
	var runs []*Run
	for _, rb := range e.Runs {
		run, err := ReadRun(filepath.Join(out, RunsDir, rb.ID))
		if err != nil {
			return &e, runs, err
		}
		runs = append(runs, run)
	}
	return &e, runs, nil
}
