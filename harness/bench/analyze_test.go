package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/hopscope/hopscope/harness/load"
	"github.com/hopscope/hopscope/hist"
)

// synthRun makes a checked-in-memory run from raw latencies.
func synthRun(scenario string, rate, n int, xs []int64, achieved float64, errors int64) *Run {
	h := histOf(xs)
	return &Run{
		ID: fmt.Sprintf("%s-%d-%d", scenario, rate, n), Scenario: scenario, RateRPS: rate, N: n,
		Client: &load.Result{
			RequestedRPS: float64(rate), AchievedRPS: achieved,
			Requests: int64(len(xs)), Errors: errors, OK: int64(len(xs)) - errors,
			Latency: hist.Summarize(h), LatencyHist: hist.Encoded{H: h},
		},
		Probe: ProbeHealth{State: ProbeStateOff},
	}
}

func TestCheckRules(t *testing.T) {
	xs := []int64{1e6, 2e6, 3e6}
	cases := []struct {
		name     string
		run      *Run
		probe    string
		want     string // "" = valid
		nreasons int
	}{
		{"ok", synthRun("baseline", 200, 1, xs, 200, 0), ProbeAuto, "", 0},
		{"exactly 1% short", synthRun("baseline", 200, 1, xs, 198, 0), ProbeAuto, "", 0},
		{"rate short", synthRun("baseline", 200, 1, xs, 197.9, 0), ProbeAuto, "below the target 200 RPS", 1},
		{"errors", synthRun("baseline", 200, 1, make([]int64, 1000), 200, 2), ProbeAuto, "2 errors in 1000", 1},
		{"errors at limit", synthRun("baseline", 200, 1, make([]int64, 1000), 200, 1), ProbeAuto, "", 0},
		{"no client", &Run{ClientError: "proxy exited"}, ProbeAuto, "proxy exited", 1},
		{"probe required", synthRun("baseline", 200, 1, xs, 200, 0), ProbeOn, "--probe=on", 1},
		{"both", synthRun("baseline", 200, 1, make([]int64, 10), 100, 5), ProbeAuto, "below", 2},
	}
	for _, tc := range cases {
		DefaultRules.Check(tc.run, 200, tc.probe)
		if tc.want == "" {
			if !tc.run.Valid {
				t.Errorf("%s: invalid %v, want valid", tc.name, tc.run.InvalidReasons)
			}
			continue
		}
		if tc.run.Valid || len(tc.run.InvalidReasons) != tc.nreasons || !strings.Contains(strings.Join(tc.run.InvalidReasons, "; "), tc.want) {
			t.Errorf("%s: valid %v reasons %q, want %d reasons with %q", tc.name, tc.run.Valid, tc.run.InvalidReasons, tc.nreasons, tc.want)
		}
	}
	drops := synthRun("ref", 200, 1, xs, 200, 0)
	drops.Probe = ProbeHealth{State: ProbeStateOK, Drops: 3}
	DefaultRules.Check(drops, 200, ProbeAuto)
	if drops.Valid {
		t.Error("a run whose probe dropped events must be invalid")
	}
}

// A synthetic experiment: baseline and one proxy at one rate, 8 runs; the
// baseline runs' maxima are planted so the three to drop are known, one
// proxy run misses its rate. Every aggregate is recomputed here from the
// raw samples, not from the code under test.
func TestAnalyzeSynthetic(t *testing.T) {
	const rate, runs = 200, 8
	cfg := Custom().WithProxies(Scenario{Name: "ref", Proxy: "ref"})
	cfg.RatesRPS = []int{rate}
	cfg.Runs = runs
	cfg.DropHighestBaselineMax = 3
	rng := rand.New(rand.NewPCG(21, 22))
	// Baseline max latencies: runs 2, 5 and 7 carry one outlier each.
	outlier := map[int]int64{2: 90e6, 5: 70e6, 7: 80e6}
	raw := map[string][]int64{}
	var all []*Run
	for n := 1; n <= runs; n++ {
		b := expSamples(rng, 2000, 1e6, 5e5)
		if o, ok := outlier[n]; ok {
			b[0] = o
		}
		p := expSamples(rng, 2000, 1e6, 1.5e6) // the proxy adds 1 ms
		br := synthRun("baseline", rate, n, b, rate, 0)
		achieved := float64(rate)
		if n == 4 {
			achieved = 150 // proxy run 4 misses its rate: invalid
		}
		pr := synthRun("ref", rate, n, p, achieved, 0)
		raw[br.ID], raw[pr.ID] = b, p
		all = append(all, br, pr)
	}
	for _, r := range all {
		cfg.Rules.Check(r, rate, cfg.Probe)
	}
	cells, briefs, _ := Analyze(cfg, all)
	if len(cells) != 2 || len(briefs) != 2*runs {
		t.Fatalf("%d cells, %d briefs", len(cells), len(briefs))
	}
	base, ref := cells[0], cells[1]
	wantKept := map[string][]string{
		"baseline": {"baseline-200-1", "baseline-200-3", "baseline-200-4", "baseline-200-6", "baseline-200-8"},
		"ref":      {"ref-200-1", "ref-200-3", "ref-200-6", "ref-200-8"},
	}
	for _, c := range cells {
		if fmt.Sprint(c.Kept) != fmt.Sprint(wantKept[c.Scenario]) {
			t.Errorf("%s kept %v, want %v", c.Scenario, c.Kept, wantKept[c.Scenario])
		}
		if len(c.Dropped) != 3 {
			t.Errorf("%s dropped %v, want runs 2, 5, 7", c.Scenario, c.Dropped)
		}
	}
	if fmt.Sprint(ref.Invalid) != "[ref-200-4]" {
		t.Errorf("ref invalid %v, want [ref-200-4]", ref.Invalid)
	}
	for _, c := range cells {
		var pooledRaw []int64
		for _, id := range c.Kept {
			pooledRaw = append(pooledRaw, raw[id]...)
		}
		if c.Pooled.Count != int64(len(pooledRaw)) {
			t.Errorf("%s pooled count %d, want %d (kept runs only)", c.Scenario, c.Pooled.Count, len(pooledRaw))
		}
		for _, key := range []string{"p50", "p90", "p99", "p99.9"} {
			q := quantileOf(key)
			got, _ := c.Pooled.At(key)
			if want := exactAt(pooledRaw, q); !within(got, want) {
				t.Errorf("%s pooled %s = %d, raw samples %d", c.Scenario, key, got, want)
			}
			// The published statistic from the raw runs.
			var xs []float64
			for _, id := range c.Kept {
				xs = append(xs, float64(exactAt(raw[id], q)))
			}
			var mean float64
			for _, x := range xs {
				mean += x
			}
			mean /= float64(len(xs))
			var ss float64
			for _, x := range xs {
				ss += (x - mean) * (x - mean)
			}
			sd := math.Sqrt(ss / float64(len(xs)-1))
			st := c.PerRun[key]
			if math.Abs(st.Mean-mean) > mean*1e-3 || math.Abs(st.SD-sd) > mean*2e-3 || st.N != len(xs) {
				t.Errorf("%s per-run %s = %+v, raw runs give mean %.0f sd %.0f", c.Scenario, key, st, mean, sd)
			}
			if key != "max" {
				ci := c.CIOrderStat[key]
				if ci.Lo > got || ci.Hi < got {
					t.Errorf("%s %s order-stat CI %v misses the pooled value %d", c.Scenario, key, ci, got)
				}
				if bc, ok := c.CIRuns[key]; !ok || bc.Lo > got || bc.Hi < got {
					t.Errorf("%s %s bootstrap CI %v (present %v) misses the pooled value %d", c.Scenario, key, bc, ok, got)
				}
			}
		}
	}
	if base.Added != nil || ref.Added == nil {
		t.Fatalf("added: baseline %v, ref %v", base.Added, ref.Added)
	}
	p50 := ref.Added.Pooled["p50"]
	if want := ref.Pooled.P50 - base.Pooled.P50; p50 != want {
		t.Errorf("added pooled p50 %d, want %d", p50, want)
	}
	if math.Abs(float64(p50)-1e6) > 0.15e6 {
		t.Errorf("added pooled p50 %d, the synthetic proxy adds 1 ms", p50)
	}
	if ci := ref.Added.PooledCI["p50"]; ci.Lo > 1e6 || ci.Hi < 1e6 || !strings.HasPrefix(ref.Added.PooledCIMethod, "bootstrap") {
		t.Errorf("added p50 CI %v (%s) misses 1 ms", ci, ref.Added.PooledCIMethod)
	}
	if d := ref.Added.PerRun["p50"].Mean - (ref.PerRun["p50"].Mean - base.PerRun["p50"].Mean); d != 0 {
		t.Errorf("added per-run p50 off by %v", d)
	}
	// The experiment's JSON must marshal (no NaN) and carry the drops.
	if _, err := json.Marshal(cells); err != nil {
		t.Fatal(err)
	}
	nd := 0
	for _, b := range briefs {
		if b.Dropped {
			nd++
		}
	}
	if nd != 6 {
		t.Errorf("%d runs marked dropped, want 6 (3 indices x 2 scenarios)", nd)
	}
}

func TestDroppedIndicesKeepsOne(t *testing.T) {
	var runs []*Run
	for n := 1; n <= 2; n++ {
		r := synthRun("baseline", 20, n, []int64{int64(n) * 1e6}, 20, 0)
		DefaultRules.Check(r, 20, ProbeAuto)
		runs = append(runs, r)
	}
	d := DroppedIndices(runs, 20, 3)
	if len(d) != 1 || !d[2] {
		t.Errorf("dropped %v, want only run 2 (the highest max), one baseline run kept", d)
	}
}

func TestResourcesAggregate(t *testing.T) {
	mk := func(n int, cpuC, cpuS, memC, memS int64) *Run {
		r := synthRun("ref", 200, n, []int64{1e6, 2e6}, 200, 0)
		r.ResourcesWindowNs = 10e9
		enc := func(cpu, mem int64) json.RawMessage {
			b, _ := json.Marshal(map[string]any{"cpu_usec": cpu, "memory_peak_bytes": mem, "peak_source": "memory.max_usage_in_bytes"})
			return b
		}
		r.Resources = map[string]json.RawMessage{
			"client/proxy": enc(cpuC, memC), "server/proxy": enc(cpuS, memS),
			"server/app": enc(999999, 1<<30), // not a proxy: not in the data plane
		}
		DefaultRules.Check(r, 200, ProbeAuto)
		return r
	}
	runs := []*Run{mk(1, 100e3, 300e3, 10<<20, 20<<20), mk(2, 200e3, 100e3, 30<<20, 5<<20)}
	c := Cell{}
	c.fillResources(runs)
	dp := c.DataPlane
	if dp == nil {
		t.Fatal("no data plane")
	}
	// busiest CPU per run: 300e3, 200e3 -> mean 250e3; sum: 400e3, 300e3 -> 350e3.
	// busiest memory: max(20, 30) MiB; sum: max(30, 35) MiB.
	if *dp.BusiestCPUUsec != 250e3 || *dp.SumCPUUsec != 350e3 || *dp.BusiestMemoryPeakBytes != 30<<20 || *dp.SumMemoryPeakBytes != 35<<20 {
		t.Errorf("data plane %v %v %v %v", *dp.BusiestCPUUsec, *dp.SumCPUUsec, *dp.BusiestMemoryPeakBytes, *dp.SumMemoryPeakBytes)
	}
	// 350 ms of CPU over 10 s: 0.035 cores.
	if math.Abs(*dp.CPUCores-0.035) > 1e-12 {
		t.Errorf("cores %v, want 0.035", *dp.CPUCores)
	}
	if m := c.Resources["client/proxy"].MemoryPeakBytes; m == nil || *m != 30<<20 {
		t.Errorf("client proxy memory %v", m)
	}
	// A missing figure is absent, not zero.
	r := mk(3, 1, 1, 1, 1)
	r.Resources["server/proxy"] = json.RawMessage(`{"cpu_usec": 5, "memory_peak_bytes": null}`)
	c = Cell{}
	c.fillResources([]*Run{r})
	if c.DataPlane.BusiestMemoryPeakBytes != nil || c.DataPlane.SumMemoryPeakBytes != nil {
		t.Error("a proxy without a memory figure must leave the data plane's memory absent")
	}
}
