package report

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/net/html"

	"github.com/hopscope/hopscope/harness/bench"
	"github.com/hopscope/hopscope/harness/load"
	"github.com/hopscope/hopscope/hist"
)

// synthetic builds an experiment from generated latencies: baseline and two
// proxies ("fast" adds 0.2 ms, "slow" adds 1 ms) at two rates, 3 runs each,
// with hops and resources on the proxies.
func synthetic(t *testing.T) *bench.Experiment {
	t.Helper()
	cfg := bench.Custom().WithProxies(bench.Scenario{Name: "fast", Proxy: "fast"}, bench.Scenario{Name: "slow", Proxy: "slow"})
	cfg.Name = "synthetic"
	cfg.RatesRPS = []int{20, 200}
	cfg.Runs = 3
	rng := rand.New(rand.NewPCG(1, 1))
	add := map[string]float64{"baseline": 0, "fast": 2e5, "slow": 1e6}
	var runs []*bench.Run
	for _, spec := range cfg.Plan() {
		h := hist.New()
		for range 3000 {
			hist.Record(h, int64(3e5+add[spec.Scenario.Name]+rng.ExpFloat64()*1e5))
		}
		r := &bench.Run{
			ID: spec.ID(), Scenario: spec.Scenario.Name, RateRPS: spec.RateRPS, N: spec.N,
			Client: &load.Result{RequestedRPS: float64(spec.RateRPS), AchievedRPS: float64(spec.RateRPS), Requests: 3000,
				Latency: hist.Summarize(h), LatencyHist: hist.Encoded{H: h}},
			Probe: bench.ProbeHealth{State: bench.ProbeStateUnavailable, Reason: "test: no probe"},
		}
		if !spec.Scenario.IsBaseline() {
			hops := map[string]*hdrhistogram.Histogram{}
			for i, name := range bench.HopNames {
				hh := hist.New()
				for range 1000 {
					hist.Record(hh, int64(float64(i+1)*1e4+add[spec.Scenario.Name]/4))
				}
				hops[name] = hh
			}
			r.SetHopHists(hops)
			r.Probe = bench.ProbeHealth{State: bench.ProbeStateOK, Mode: "tcx"}
			r.ResourcesWindowNs = int64(15 * time.Second)
			res := func(cpu, mem int64) json.RawMessage {
				b, _ := json.Marshal(map[string]any{"cpu_usec": cpu, "memory_peak_bytes": mem, "peak_source": "memory.max_usage_in_bytes"})
				return b
			}
			r.Resources = map[string]json.RawMessage{"client/proxy": res(100000, 8<<20), "server/proxy": res(150000, 12<<20)}
		}
		bench.DefaultRules.Check(r, spec.RateRPS, cfg.Probe)
		runs = append(runs, r)
	}
	e := &bench.Experiment{Name: cfg.Name, Config: cfg, Status: "complete", Started: time.Unix(1.7e9, 0),
		Environment: bench.Environment{Backend: "lab", Kernel: "6.18", CPU: "test CPU", CPUs: 2}}
	e.Cells, e.Runs, e.Notes = bench.Analyze(cfg, runs)
	return e
}

func TestSummaryReadsLikeTheFindings(t *testing.T) {
	e := synthetic(t)
	s := Summary(e)
	for _, want := range []string{
		"## Findings", "| rate (RPS) | baseline p50 / max (ms) | fast added p50 / max (ms) | slow added p50 / max (ms) |",
		"## 20 RPS", "## 200 RPS", "**Winner at 20 RPS: fast**", "**Winner at 200 RPS: fast**",
		"## Resources (data plane)", "busiest max memory (MiB)", "### fast", "| server-proxy/in |",
		"| client (end to end) |", "## Method",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	// The findings row shows the cells' own figures.
	b, f := e.Cell("baseline", 200), e.Cell("fast", 200)
	row := fmt.Sprintf("| 200 | %s / %s | %s / %s |", ms(b.PerRun["p50"].Mean), ms(b.PerRun["max"].Mean),
		signedMs(f.Added.PerRun["p50"].Mean), signedMs(f.Added.PerRun["max"].Mean))
	if !strings.Contains(s, row) {
		t.Errorf("summary lacks the findings row %q:\n%s", row, s)
	}
	// The resources table: the busiest proxy had 12 MiB, both 20 MiB; CPU
	// 150 ms busiest, 250 ms both, 250 ms over 15 s = 0.017 cores.
	if !strings.Contains(s, "| fast | 20 | 12.0 | 150.0 | 20.0 | 250.0 | 0.017 | memory.max_usage_in_bytes |") {
		t.Errorf("resources row wrong:\n%s", s)
	}
	// Probe absent on the baseline runs: said, not hidden.
	if strings.Contains(s, "No hops were measured") {
		t.Error("hops were measured on the proxies")
	}
}

func TestSummaryWithoutProbeSaysWhy(t *testing.T) {
	e := synthetic(t)
	for i := range e.Cells {
		e.Cells[i].Hops = nil
	}
	s := Summary(e)
	if !strings.Contains(s, "No hops were measured: unavailable: test: no probe") {
		t.Errorf("summary must say why there are no hops:\n%s", s)
	}
}

func TestHTMLSelfContained(t *testing.T) {
	e := synthetic(t)
	dir := t.TempDir()
	if err := Write(dir, e); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, bench.ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			counts[n.Data]++
			for _, a := range n.Attr {
				if (a.Key == "src" || a.Key == "href") || strings.Contains(a.Val, "http://") || strings.Contains(a.Val, "https://") {
					t.Errorf("<%s %s=%q>: the report must fetch nothing", n.Data, a.Key, a.Val)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if counts["script"] != 0 {
		t.Error("no scripts in the report")
	}
	// A percentile chart and an added-latency chart per rate, the hop
	// chart and the resource chart.
	if counts["svg"] != 6 {
		t.Errorf("%d charts, want 6", counts["svg"])
	}
	// One line per scenario in each percentile chart.
	if counts["polyline"] != 2*3 {
		t.Errorf("%d polylines, want 6", counts["polyline"])
	}
	if _, err := os.Stat(filepath.Join(dir, bench.SummaryFile)); err != nil {
		t.Error(err)
	}
}

func TestNiceTicks(t *testing.T) {
	for max, want := range map[float64]string{
		1.87:  "[0 0.5 1 1.5 2]",
		0.9:   "[0 0.5 1]",
		10:    "[0 5 10]",
		0.031: "[0 0.01 0.02 0.03 0.04]",
	} {
		got := niceTicks(max)
		// Round away float noise before comparing.
		for i := range got {
			got[i] = math.Round(got[i]*1e6) / 1e6
		}
		if fmt.Sprint(got) != want {
			t.Errorf("niceTicks(%v) = %v, want %s", max, got, want)
		}
	}
}
