package bench_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/hopscope/hopscope/harness/bench"
	"github.com/hopscope/hopscope/harness/lab"
	"github.com/hopscope/hopscope/harness/report"
	"github.com/hopscope/hopscope/hist"
)

// hopscopeBin is the CLI built for the pods (app, reference proxy, load).
var hopscopeBin string

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			return m.Run() // the lab tests skip, saying why
		}
		dir, err := os.MkdirTemp("", "hsb-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		gobin, err := exec.LookPath("go")
		if err != nil {
			gobin = "/usr/local/go/bin/go" // where the Makefile expects it
		}
		hopscopeBin = filepath.Join(dir, "hopscope")
		cmd := exec.Command(gobin, "build", "-o", hopscopeBin, "github.com/hopscope/hopscope/cmd/hopscope")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build hopscope: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

const (
	labName    = "hsb-e2e"
	cgroupRoot = "/hopscope-test-bench"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the lab makes network namespaces, veths and cgroups")
	}
}

func testBackend(t *testing.T) *bench.LabBackend {
	t.Helper()
	b := &bench.LabBackend{Hopscope: hopscopeBin, LabName: labName, CgroupRoot: cgroupRoot}
	lab.Cleanup(labName) // a killed earlier run's leftovers
	t.Cleanup(func() {
		lab.Cleanup(labName)
		checkNothingLeft(t)
	})
	return b
}

// checkNothingLeft fails if anything of the test's lab remains: namespace,
// state directory, cgroup (with its processes).
func checkNothingLeft(t *testing.T) {
	t.Helper()
	for _, pod := range []string{"client", "server"} {
		if _, err := os.Stat(filepath.Join(lab.NetnsDir, labName+"-"+pod)); err == nil {
			t.Errorf("namespace %s-%s left behind", labName, pod)
		}
	}
	if _, err := os.Stat(filepath.Join(lab.StateDir, labName)); err == nil {
		t.Errorf("lab state directory %s left behind", filepath.Join(lab.StateDir, labName))
	}
	matches, _ := filepath.Glob("/sys/fs/cgroup/*" + cgroupRoot + "/" + labName)
	more, _ := filepath.Glob("/sys/fs/cgroup" + cgroupRoot + "/" + labName)
	for _, m := range append(matches, more...) {
		t.Errorf("cgroup %s left behind", m)
	}
}

func newRunner(b bench.Backend, probe string) *bench.Runner {
	return &bench.Runner{
		Backend:   b,
		Observers: []bench.Observer{&bench.ProbeObserver{Mode: probe, Join: true}, &bench.SamplerObserver{}},
		Version:   "test",
		Render:    report.Write,
	}
}

func sameSummary(a, b hist.Summary) bool {
	for _, k := range hist.Keys {
		va, _ := a.At(k)
		vb, _ := b.At(k)
		if va != vb {
			return false
		}
	}
	return a.Count == b.Count
}

// A short experiment through the real lab: baseline, the reference proxy,
// a proxy whose upstream is wrong (every request fails: invalid runs), one
// that exits at start (skipped after its first run) and one that is not a
// proxy at all (skipped before anything starts). The results directory
// must be complete and its files must agree with each other.
func TestBenchEndToEnd(t *testing.T) {
	needRoot(t)
	b := testBackend(t)
	cfg := bench.Custom().WithProxies(
		bench.Scenario{Name: "reference", Proxy: "reference"},
		bench.Scenario{Name: "badup", Template: hopscopeBin + " proxy -q --listen {{.Listen}} --upstream 127.0.0.1:9"},
		bench.Scenario{Name: "broken", Template: "false {{.Listen}}"},
		bench.Scenario{Name: "nosuch", Proxy: "nosuch"},
	)
	cfg.RatesRPS = []int{200}
	cfg.Runs = 2
	// Long enough that a slow last response (the achieved rate counts up
	// to the last completion) does not cost 1% of the rate.
	cfg.Duration = bench.Duration(3 * time.Second)
	cfg.Warmup = bench.Duration(500 * time.Millisecond)
	out := t.TempDir()
	var log strings.Builder
	r := newRunner(b, bench.ProbeAuto)
	r.Log = &log
	e, err := r.Run(context.Background(), cfg, out)
	t.Logf("runner log:\n%s", log.String())
	if err != nil {
		t.Fatal(err)
	}
	if e.Status != "complete" {
		t.Errorf("status %q", e.Status)
	}
	skipped := map[string]string{}
	for _, s := range e.Skipped {
		skipped[s.Scenario] = s.Reason
	}
	if !strings.Contains(skipped["nosuch"], "not a built-in") {
		t.Errorf("nosuch: skipped %q, want the lab's 'not a built-in' message", skipped["nosuch"])
	}
	if !strings.Contains(skipped["broken"], "setup failed") {
		t.Errorf("broken: skipped %q, want a setup failure", skipped["broken"])
	}

	// Read everything back from disk, as a person's tools would.
	e2, runs, err := bench.ReadExperiment(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{bench.SummaryFile, bench.ReportFile} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("%s missing or empty: %v", f, err)
		}
	}
	want := map[string]int{"baseline": 2, "reference": 2, "badup": 2, "broken": 1}
	got := map[string]int{}
	byID := map[string]*bench.Run{}
	for _, run := range runs {
		got[run.Scenario]++
		byID[run.ID] = run
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("runs per scenario %v, want %v", got, want)
	}
	for _, run := range runs {
		dir := filepath.Join(out, bench.RunsDir, run.ID)
		if _, err := os.Stat(filepath.Join(dir, bench.RecordsFile)); err == nil {
			t.Errorf("%s: the load records outlived the run", run.ID)
		}
		if run.Client == nil {
			if run.Scenario != "broken" || run.Valid || !strings.Contains(strings.Join(run.InvalidReasons, " "), "setup") {
				t.Errorf("%s: no client result (%s), invalid %q", run.ID, run.ClientError, run.InvalidReasons)
			}
			continue
		}
		// run.json's percentiles are those of client.hlog's intervals merged.
		f, err := os.Open(filepath.Join(dir, bench.ClientHlog))
		if err != nil {
			t.Fatal(err)
		}
		hs, err := hist.ReadLog(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", run.ID, err)
		}
		fromLog := hist.Summarize(bench.Merge(hs))
		if !sameSummary(fromLog, run.Client.Latency) {
			t.Errorf("%s: client.hlog gives %+v, run.json %+v", run.ID, fromLog, run.Client.Latency)
		}
		if !sameSummary(hist.Summarize(run.Client.LatencyHist.H), run.Client.Latency) {
			t.Errorf("%s: latency_hist disagrees with latency_ns", run.ID)
		}
		if _, err := os.Stat(filepath.Join(dir, bench.ResourcesCSV)); err != nil {
			t.Errorf("%s: %v", run.ID, err)
		}
		if run.Probe.State == bench.ProbeStateOK && len(run.Hops) == 0 {
			if run.Probe.Reason == "" {
				t.Errorf("%s: probe ok, no hops, and no reason", run.ID)
			}
		} else if run.Probe.State == bench.ProbeStateOK {
			if _, err := os.Stat(filepath.Join(dir, bench.HopsHlog)); err != nil {
				t.Errorf("%s: probe ok but %v", run.ID, err)
			}
			for name, h := range run.HopHists() {
				if !sameSummary(hist.Summarize(h), run.Hops[name]) {
					t.Errorf("%s: hops.hlog %s disagrees with run.json", run.ID, name)
				}
			}
		} else if run.Probe.Reason == "" {
			t.Errorf("%s: probe %s without a reason", run.ID, run.Probe.State)
		}
		switch run.Scenario {
		case "badup":
			if run.Valid || !strings.Contains(strings.Join(run.InvalidReasons, " "), "errors in") {
				t.Errorf("%s: valid %v %q, want invalid for its errors", run.ID, run.Valid, run.InvalidReasons)
			}
		case "baseline", "reference":
			// On a machine this busy a run may miss its rate; that is the
			// rule working, not this test failing.
			if !run.Valid {
				t.Logf("%s: invalid: %q", run.ID, run.InvalidReasons)
			}
		}
		if run.Scenario == "reference" {
			for _, src := range []string{"client/proxy", "server/proxy"} {
				if _, ok := run.Resources[src]; !ok {
					t.Errorf("%s: no resources for %s (%s)", run.ID, src, run.ResourcesAbsent)
				}
			}
			if run.Probe.State == bench.ProbeStateOK {
				if h, ok := run.Hops["server-proxy/in"]; !ok || h.Count == 0 {
					t.Errorf("%s: probe ok but no server-proxy/in hop: %v", run.ID, run.Hops)
				}
				// Joined with the load's records: the client's own time,
				// never negative (clamped to 1 µs at worst) and far below
				// the whole service time.
				send, recv := run.Hops[bench.ClientSend], run.Hops[bench.ClientRecv]
				if run.Probe.Joined == 0 || send.Count == 0 || recv.Count == 0 {
					t.Errorf("%s: no join with the load records: joined %d, unjoined %d, %s", run.ID, run.Probe.Joined, run.Probe.Unjoined, run.Probe.Reason)
				} else if send.P50 > run.Client.ServiceTime.P50 || recv.P50 > run.Client.ServiceTime.P50 {
					t.Errorf("%s: client/send p50 %d or client/recv p50 %d above the service time p50 %d", run.ID, send.P50, recv.P50, run.Client.ServiceTime.P50)
				}
			}
		}
	}
	// Cells: pooled = merge of the kept runs; invalid runs kept out.
	if len(e2.Cells) != 4 {
		t.Errorf("%d cells, want 4 (nosuch never ran)", len(e2.Cells))
	}
	for _, c := range e2.Cells {
		var kept []*hdrhistogram.Histogram
		var p50s []float64
		for _, id := range c.Kept {
			run := byID[id]
			if run == nil || !run.Valid {
				t.Errorf("cell %s keeps %s, which is missing or invalid", c.Scenario, id)
				continue
			}
			kept = append(kept, run.Client.LatencyHist.H)
			p50s = append(p50s, float64(run.Client.Latency.P50))
		}
		switch c.Scenario {
		case "badup", "broken":
			if len(c.Kept) != 0 || c.Pooled != nil {
				t.Errorf("cell %s kept %v: its runs are invalid", c.Scenario, c.Kept)
			}
			continue
		}
		var valid []string
		for _, run := range runs {
			if run.Scenario == c.Scenario && run.Valid {
				valid = append(valid, run.ID)
			}
		}
		if fmt.Sprint(c.Kept) != fmt.Sprint(valid) {
			t.Errorf("cell %s kept %v, want its valid runs %v", c.Scenario, c.Kept, valid)
		}
		if len(c.Kept) == 0 {
			continue
		}
		if pooled := hist.Summarize(bench.Merge(kept)); !sameSummary(pooled, *c.Pooled) {
			t.Errorf("cell %s pooled %+v, merge of its runs %+v", c.Scenario, *c.Pooled, pooled)
		}
		if m, _ := bench.MeanSD(p50s); m != c.PerRun["p50"].Mean {
			t.Errorf("cell %s per-run p50 mean %v, runs give %v", c.Scenario, c.PerRun["p50"].Mean, m)
		}
		if c.Scenario == "reference" && e2.Cell("baseline", 200).Pooled != nil && (c.Added == nil || c.Added.Pooled["p50"] <= 0) {
			t.Errorf("reference adds nothing over baseline: %+v", c.Added)
		}
	}
	summary, _ := os.ReadFile(filepath.Join(out, bench.SummaryFile))
	for _, w := range []string{"## 200 RPS", "badup-200-1:", "broken skipped", "nosuch skipped"} {
		if !strings.Contains(string(summary), w) {
			t.Errorf("summary.md lacks %q:\n%s", w, summary)
		}
	}
}

// Ctrl-C in the middle of a run: the runner stops the load generator, which
// writes what it measured; the run is written (invalid, interrupted), the
// experiment too, and the lab is gone.
func TestBenchInterrupt(t *testing.T) {
	needRoot(t)
	b := testBackend(t)
	cfg := bench.Custom().WithProxies(bench.Scenario{Name: "reference", Proxy: "reference"})
	cfg.RatesRPS = []int{200}
	cfg.Runs = 1
	cfg.Duration = bench.Duration(20 * time.Second)
	cfg.Warmup = 0
	cfg.Probe = bench.ProbeOff
	out := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(3*time.Second, cancel)
	start := time.Now()
	e, err := newRunner(b, cfg.Probe).Run(ctx, cfg, out)
	if !errors.Is(err, bench.ErrInterrupted) {
		t.Fatalf("err %v, want interrupted", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("stopping took until %v after the start", d)
	}
	if e.Status != "interrupted" {
		t.Errorf("status %q", e.Status)
	}
	_, runs, err := bench.ReadExperiment(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 {
		t.Fatalf("%d runs written, want the one interrupted", len(runs))
	}
	run := runs[0]
	if run.Client == nil || !run.Client.Interrupted || run.Client.Requests == 0 {
		t.Fatalf("interrupted run's client result %+v (%s)", run.Client, run.ClientError)
	}
	if run.Valid || !strings.Contains(strings.Join(run.InvalidReasons, " "), "interrupted") {
		t.Errorf("interrupted run valid %v %q", run.Valid, run.InvalidReasons)
	}
	if run.Probe.State != bench.ProbeStateOff {
		t.Errorf("probe %q with --probe=off", run.Probe.State)
	}
}
