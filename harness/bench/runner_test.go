package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hopscope/hopscope/harness/load"
	"github.com/hopscope/hopscope/hist"
	"github.com/hopscope/hopscope/target"
)

// fakeBackend is a test double for the runner's bookkeeping: it builds
// nothing and its load "measures" generated latencies. The real lab is
// exercised by the end-to-end tests.
type fakeBackend struct {
	log       []string // what happened, in order
	failUp    map[string]error
	notThere  map[string]bool
	up        int
	cleanups  int
	cancelAt  int // cancel the context when this many loads have run
	cancel    context.CancelFunc
	loads     int
	interrupt bool // the load notices the cancel and reports interrupted
	// out, when set, is read at the third load: the checkpoint written
	// after the second run lands in status.
	out, status string
}

func (f *fakeBackend) Name() string                                    { return "fake" }
func (f *fakeBackend) Environment(ctx context.Context, e *Environment) {}
func (f *fakeBackend) Cleanup(ctx context.Context) error               { f.cleanups++; return nil }

func (f *fakeBackend) Check(s Scenario) error {
	if f.notThere[s.Name] {
		return fmt.Errorf("proxy %s is not installed: apt-get install %s", s.Name, s.Name)
	}
	return nil
}

func (f *fakeBackend) Up(ctx context.Context, s Scenario) (Deployment, error) {
	if err := f.failUp[s.Name]; err != nil {
		f.log = append(f.log, "fail "+s.Name)
		return nil, err
	}
	f.up++
	f.log = append(f.log, "up "+s.Name)
	return &fakeDeployment{f: f, s: s}, nil
}

type fakeDeployment struct {
	f *fakeBackend
	s Scenario
}

func (d *fakeDeployment) Targets() []target.Target {
	return []target.Target{{Name: "c", Role: target.Client}, {Name: "s", Role: target.Server}}
}

func (d *fakeDeployment) Down(ctx context.Context) error {
	d.f.up--
	d.f.log = append(d.f.log, "down "+d.s.Name)
	return nil
}

func (d *fakeDeployment) Load(ctx context.Context, spec LoadSpec) (*load.Result, error) {
	d.f.loads++
	if d.f.out != "" && d.f.loads == 3 {
		if e, _, err := ReadExperiment(d.f.out); err == nil {
			d.f.status = fmt.Sprintf("%s, %d runs", e.Status, len(e.Runs))
		} else {
			d.f.status = err.Error()
		}
	}
	rng := rand.New(rand.NewPCG(uint64(d.f.loads), 1))
	h := hist.New()
	n := int(float64(spec.RateRPS) * spec.Duration.Seconds())
	for range n {
		hist.Record(h, int64(1e5+rng.ExpFloat64()*1e5))
	}
	res := &load.Result{RequestedRPS: float64(spec.RateRPS), AchievedRPS: float64(spec.RateRPS), Requests: int64(n),
		OK: int64(n), Latency: hist.Summarize(h), LatencyHist: hist.Encoded{H: h}, DurationNs: int64(spec.Duration)}
	if d.f.loads == d.f.cancelAt {
		d.f.cancel()
		if d.f.interrupt {
			res.Interrupted = true
		}
	}
	return res, nil
}

// probeState is an observer that reports a fixed probe state.
type probeState struct{ state, reason string }

func (p probeState) Begin(ctx context.Context, run *Run, _ []target.Target) {
	run.Probe = ProbeHealth{State: p.state, Reason: p.reason}
}
func (p probeState) End(*Run, string) {}
func (p probeState) Close()           {}

func shortConfig(names ...string) Config {
	var ss []Scenario
	for _, n := range names {
		ss = append(ss, Scenario{Name: n, Proxy: n})
	}
	c := Custom().WithProxies(ss...)
	c.RatesRPS = []int{20, 200}
	c.Runs = 2
	c.Duration = Duration(time.Second)
	c.Warmup = 0
	return c
}

func TestRunnerBookkeeping(t *testing.T) {
	f := &fakeBackend{
		failUp:   map[string]error{"exits": errors.New("proxy exited at start: see its log")},
		notThere: map[string]bool{"absent": true},
	}
	cfg := shortConfig("good", "exits", "absent")
	out := t.TempDir()
	// Leftovers of an earlier experiment in the same directory go; other
	// files stay.
	os.MkdirAll(filepath.Join(out, RunsDir, "old-1-1"), 0o755)
	os.WriteFile(filepath.Join(out, RunsDir, "old-1-1", RunFile), []byte("{}"), 0o644)
	os.WriteFile(filepath.Join(out, "notes.txt"), []byte("mine"), 0o644)
	f.out = out
	rendered := false
	r := &Runner{Backend: f, Observers: []Observer{probeState{ProbeStateUnavailable, "test"}},
		Render: func(string, *Experiment) error { rendered = true; return nil }}
	e, err := r.Run(context.Background(), cfg, out)
	if err != nil {
		t.Fatal(err)
	}
	// Runs 1 and 2 done, the failed setup of "exits" the third.
	if f.status != "running: 3 of 9 runs done, 3 runs" {
		t.Errorf("checkpoint during the third load: %q", f.status)
	}
	if !rendered || e.Status != "complete" || f.up != 0 || f.cleanups != 2 {
		t.Errorf("rendered %v status %q deployments left %d cleanups %d", rendered, e.Status, f.up, f.cleanups)
	}
	// Every Up has its Down right after its load; "exits" is tried once,
	// "absent" never.
	want := []string{"up baseline", "down baseline", "up good", "down good", "fail exits",
		"up baseline", "down baseline", "up good", "down good", // 200 RPS, run 1: exits skipped now
		"up good", "down good", "up baseline", "down baseline", // run 2 rotates the order
		"up good", "down good", "up baseline", "down baseline"}
	if got := strings.Join(f.log, ", "); got != strings.Join(want, ", ") {
		t.Errorf("order:\n got %s\nwant %s", got, strings.Join(want, ", "))
	}
	reasons := map[string]string{}
	for _, s := range e.Skipped {
		reasons[s.Scenario] = s.Reason
	}
	if !strings.Contains(reasons["absent"], "apt-get install absent") || !strings.Contains(reasons["exits"], "exited at start") {
		t.Errorf("skips %v", reasons)
	}
	if _, err := os.Stat(filepath.Join(out, RunsDir, "old-1-1")); !os.IsNotExist(err) {
		t.Error("an earlier experiment's run survived")
	}
	if _, err := os.Stat(filepath.Join(out, "notes.txt")); err != nil {
		t.Error("a file that is not hopscope's was removed")
	}
	// The failed setup is on record as a run, invalid, with the cause.
	run, err := ReadRun(filepath.Join(out, RunsDir, "exits-20-1"))
	if err != nil {
		t.Fatal(err)
	}
	if run.Valid || !strings.Contains(strings.Join(run.InvalidReasons, ";"), "exited at start") {
		t.Errorf("failed setup run: valid %v %q", run.Valid, run.InvalidReasons)
	}
	if len(e.Runs) != 9 || len(e.Cells) != 5 {
		t.Errorf("%d runs %d cells, want 9 and 5 (baseline, good x 2 rates, exits at 20)", len(e.Runs), len(e.Cells))
	}
	for _, rb := range e.Runs {
		if rb.ID == "exits-20-1" {
			if rb.Probe != "failed: not run: setup failed" {
				t.Errorf("%s: probe %q", rb.ID, rb.Probe)
			}
			continue
		}
		if !strings.HasPrefix(rb.Probe, "unavailable: test") {
			t.Errorf("%s: probe %q, want the observer's reason", rb.ID, rb.Probe)
		}
	}
}

func TestRunnerStopsWhenProbeRequiredButUnavailable(t *testing.T) {
	f := &fakeBackend{}
	cfg := shortConfig("good")
	cfg.Probe = ProbeOn
	r := &Runner{Backend: f, Observers: []Observer{probeState{ProbeStateUnavailable, "needs root"}}}
	e, err := r.Run(context.Background(), cfg, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "needs root") {
		t.Fatalf("err %v, want the probe's reason", err)
	}
	if len(e.Runs) != 1 || !strings.HasPrefix(e.Status, "stopped: ") {
		t.Errorf("%d runs, status %q: want a stop after the first", len(e.Runs), e.Status)
	}
}

func TestRunnerInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &fakeBackend{cancelAt: 3, cancel: cancel, interrupt: true}
	cfg := shortConfig("good")
	out := t.TempDir()
	r := &Runner{Backend: f}
	e, err := r.Run(ctx, cfg, out)
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("err %v", err)
	}
	if e.Status != "interrupted" || len(e.Runs) != 3 || f.up != 0 || f.cleanups != 2 {
		t.Errorf("status %q, %d runs, %d deployments left, %d cleanups", e.Status, len(e.Runs), f.up, f.cleanups)
	}
	last := e.Runs[2]
	if last.Valid || !strings.Contains(strings.Join(last.InvalidReasons, ";"), "interrupted") {
		t.Errorf("the interrupted run: %+v", last)
	}
	if _, _, err := ReadExperiment(out); err != nil {
		t.Errorf("results after Ctrl-C: %v", err)
	}
}
