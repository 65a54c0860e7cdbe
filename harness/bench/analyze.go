package bench

import (
	"fmt"
	"hash/fnv"
	"math"
	"sort"
	"strings"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/hopscope/hopscope/hist"
)

// Check marks r valid or invalid under the rules, adding to any reason r
// already has (a setup failure, an interruption). targetRPS is what the
// plan asked for; probe is Config.Probe.
func (rules Rules) Check(r *Run, targetRPS int, probe string) {
	reasons := append([]string(nil), r.InvalidReasons...)
	add := func(format string, args ...any) { reasons = append(reasons, fmt.Sprintf(format, args...)) }
	switch c := r.Client; {
	case c == nil:
		if r.ClientError != "" {
			add("no client result: %s", r.ClientError)
		} else {
			add("no client result")
		}
	default:
		if c.Interrupted {
			add("interrupted after %.1f s of %s", float64(c.DurationNs)/1e9, "the measured window")
		}
		if c.Requests == 0 {
			add("no request completed")
			break
		}
		floor := float64(targetRPS) * (1 - rules.MaxRateShortfall)
		if c.AchievedRPS < floor {
			add("achieved %.1f RPS, %.1f%% below the target %d RPS (limit %.1f%%)",
				c.AchievedRPS, 100*(1-c.AchievedRPS/float64(targetRPS)), targetRPS, 100*rules.MaxRateShortfall)
		}
		if ratio := float64(c.Errors) / float64(c.Requests); ratio > rules.MaxErrorRatio {
			add("%d errors in %d requests (%.2f%%, limit %.2f%%)%s", c.Errors, c.Requests, 100*ratio,
				100*rules.MaxErrorRatio, errorClasses(c.ErrorsByClass))
		}
	}
	if r.Probe.Drops > rules.MaxProbeDrops {
		add("probe lost %d ring-buffer events (limit %d)", r.Probe.Drops, rules.MaxProbeDrops)
	}
	if probe == ProbeOn && r.Probe.State != ProbeStateOK {
		add("--probe=on but the probe is %s: %s", r.Probe.State, r.Probe.Reason)
	}
	r.InvalidReasons = reasons
	r.Valid = len(reasons) == 0
}

func errorClasses(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	var ks []string
	for k, v := range m {
		if v > 0 {
			ks = append(ks, fmt.Sprintf("%s %d", k, v))
		}
	}
	sort.Strings(ks)
	return ": " + strings.Join(ks, ", ")
}

// DroppedIndices returns, for one rate, the run indices whose baseline run
// had the highest maximum latency: up to k of them, leaving at least one
// valid baseline run. Only valid baseline runs rank (an invalid run is out
// already, and its maximum may not be a latency at all).
func DroppedIndices(runs []*Run, rate, k int) map[int]bool {
	var base []*Run
	for _, r := range runs {
		if r.Scenario == Baseline.Name && r.RateRPS == rate && r.Valid && r.latency() != nil {
			base = append(base, r)
		}
	}
	sort.SliceStable(base, func(i, j int) bool {
		mi, mj := base[i].Client.Latency.Max, base[j].Client.Latency.Max
		if mi != mj {
			return mi > mj
		}
		return base[i].N < base[j].N
	})
	k = min(k, len(base)-1)
	out := map[int]bool{}
	for i := 0; i < k; i++ {
		out[base[i].N] = true
	}
	return out
}

// Analyze computes every cell of the experiment from its runs (already
// checked), in the order of the config's rates and scenarios, and the runs'
// lines for experiment.json.
func Analyze(cfg Config, runs []*Run) ([]Cell, []RunBrief, []string) {
	var notes []string
	var cells []Cell
	dropped := map[string]bool{}
	hasBaseline := false
	for _, s := range cfg.Scenarios {
		hasBaseline = hasBaseline || s.IsBaseline()
	}
	if cfg.DropHighestBaselineMax > 0 && !hasBaseline {
		notes = append(notes, "no baseline scenario: the baseline-max outlier rule dropped nothing")
	}
	for _, rate := range cfg.RatesRPS {
		drop := map[int]bool{}
		if cfg.DropHighestBaselineMax > 0 && hasBaseline {
			drop = DroppedIndices(runs, rate, cfg.DropHighestBaselineMax)
			if len(drop) < cfg.DropHighestBaselineMax {
				notes = append(notes, fmt.Sprintf("%d RPS: dropped %d run indices by baseline max, not %d: too few valid baseline runs",
					rate, len(drop), cfg.DropHighestBaselineMax))
			}
		}
		base := -1
		for _, s := range cfg.Scenarios {
			c := Cell{Scenario: s.Name, RateRPS: rate, Runs: []string{}, Kept: []string{}, Invalid: []string{}, Dropped: []string{}}
			var kept []*Run
			for _, r := range runs {
				if r.Scenario != s.Name || r.RateRPS != rate {
					continue
				}
				c.Runs = append(c.Runs, r.ID)
				switch {
				case !r.Valid:
					c.Invalid = append(c.Invalid, r.ID)
				case drop[r.N]:
					c.Dropped = append(c.Dropped, r.ID)
					dropped[r.ID] = true
				case r.latency() == nil:
					c.Invalid = append(c.Invalid, r.ID)
				default:
					c.Kept = append(c.Kept, r.ID)
					kept = append(kept, r)
				}
			}
			if len(c.Runs) == 0 {
				continue // skipped before it ran: Experiment.Skipped says why
			}
			c.fill(kept, cfg.Seed^cellSeed(s.Name, rate))
			cells = append(cells, c)
			if s.IsBaseline() {
				base = len(cells) - 1
			}
		}
		if base >= 0 {
			for i := range cells {
				c := &cells[i]
				if c.RateRPS == rate && i != base {
					c.Added = added(c, &cells[base], cfg.Seed^cellSeed(c.Scenario+"-added", rate))
				}
			}
		}
	}
	briefs := make([]RunBrief, 0, len(runs))
	for _, r := range runs {
		probe := r.Probe.State
		if r.Probe.Reason != "" {
			probe += ": " + r.Probe.Reason
		}
		briefs = append(briefs, RunBrief{ID: r.ID, Valid: r.Valid, InvalidReasons: r.InvalidReasons, Dropped: dropped[r.ID], Probe: probe})
	}
	return cells, briefs, notes
}

func cellSeed(name string, rate int) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", name, rate)
	return h.Sum64()
}

// fill computes the cell's statistics from its kept runs.
func (c *Cell) fill(kept []*Run, seed uint64) {
	if len(kept) == 0 {
		return
	}
	var rates []float64
	for _, r := range kept {
		c.kept = append(c.kept, r.latency())
		rates = append(rates, r.Client.AchievedRPS)
	}
	m, sd := MeanSD(rates)
	c.AchievedRPS = &Stat{Mean: m, SD: sd, N: len(rates)}

	c.PerRun = map[string]Stat{}
	for _, key := range hist.Keys {
		var xs []float64
		for _, r := range kept {
			v, _ := r.Client.Latency.At(key)
			xs = append(xs, float64(v))
		}
		m, sd := MeanSD(xs)
		c.PerRun[key] = Stat{Mean: m, SD: sd, N: len(xs)}
	}

	c.pooled = Merge(c.kept)
	s := hist.Summarize(c.pooled)
	c.Pooled = &s
	c.CIOrderStat = map[string]Interval{}
	d := distOf(c.pooled)
	for _, key := range hist.Keys {
		if ci, ok := d.orderStatCI(key); ok {
			c.CIOrderStat[key] = ci
		}
	}
	if len(kept) >= MinBootstrapRuns {
		c.CIRuns = BootstrapCI(c.kept, BootstrapRounds, seed)
	}

	c.fillHops(kept)
	c.fillResources(kept)
}

func (c *Cell) fillHops(kept []*Run) {
	pooled := map[string]*hdrhistogram.Histogram{}
	for _, r := range kept {
		if len(r.hopHists) == 0 {
			continue
		}
		c.HopsRuns++
		for name, h := range r.hopHists {
			if pooled[name] == nil {
				pooled[name] = hist.New()
			}
			pooled[name].Merge(h)
		}
	}
	if len(pooled) == 0 {
		return
	}
	c.Hops = map[string]hist.Summary{}
	for name, h := range pooled {
		c.Hops[name] = hist.Summarize(h)
	}
}

// IsProxySource reports whether a resource source is a sidecar proxy (the
// data plane): sources are named "<pod>/proxy", "<pod>/app".
func IsProxySource(name string) bool { return strings.HasSuffix(name, "/proxy") }

func (c *Cell) fillResources(kept []*Run) {
	type acc struct {
		cpu, cores []float64
		mem        *int64
		source     string
	}
	per := map[string]*acc{}
	var dp struct{ busyCPU, sumCPU, cores []float64 }
	var busyMem, sumMem *int64
	maxp := func(p **int64, v int64) {
		if *p == nil || v > **p {
			*p = &v
		}
	}
	for _, r := range kept {
		var runBusyCPU, runSumCPU, runCores float64
		var runBusyMem, runSumMem int64
		cpuOK, memOK := true, true
		nproxy := 0
		for name, res := range r.resources() {
			a := per[name]
			if a == nil {
				a = &acc{}
				per[name] = a
			}
			if res.CPUUsec != nil {
				a.cpu = append(a.cpu, float64(*res.CPUUsec))
				if r.ResourcesWindowNs > 0 {
					a.cores = append(a.cores, float64(*res.CPUUsec)*1e3/float64(r.ResourcesWindowNs))
				}
			}
			if res.MemoryPeakBytes != nil {
				maxp(&a.mem, *res.MemoryPeakBytes)
				a.source = res.PeakSource
			}
			if !IsProxySource(name) {
				continue
			}
			nproxy++
			if res.CPUUsec == nil {
				cpuOK = false
			} else {
				runBusyCPU = math.Max(runBusyCPU, float64(*res.CPUUsec))
				runSumCPU += float64(*res.CPUUsec)
			}
			if res.MemoryPeakBytes == nil {
				memOK = false
			} else {
				runBusyMem = max(runBusyMem, *res.MemoryPeakBytes)
				runSumMem += *res.MemoryPeakBytes
			}
		}
		if nproxy == 0 {
			continue
		}
		if cpuOK {
			dp.busyCPU = append(dp.busyCPU, runBusyCPU)
			dp.sumCPU = append(dp.sumCPU, runSumCPU)
			if r.ResourcesWindowNs > 0 {
				runCores = runSumCPU * 1e3 / float64(r.ResourcesWindowNs)
				dp.cores = append(dp.cores, runCores)
			}
		}
		if memOK {
			maxp(&busyMem, runBusyMem)
			maxp(&sumMem, runSumMem)
		}
	}
	if len(per) == 0 {
		return
	}
	meanp := func(xs []float64) *float64 {
		if len(xs) == 0 {
			return nil
		}
		m, _ := MeanSD(xs)
		return &m
	}
	c.Resources = map[string]SourceResources{}
	for name, a := range per {
		c.Resources[name] = SourceResources{CPUUsec: meanp(a.cpu), CPUCores: meanp(a.cores), MemoryPeakBytes: a.mem, PeakSource: a.source}
	}
	if len(dp.busyCPU) > 0 || busyMem != nil {
		c.DataPlane = &DataPlane{
			BusiestCPUUsec: meanp(dp.busyCPU), SumCPUUsec: meanp(dp.sumCPU), CPUCores: meanp(dp.cores),
			BusiestMemoryPeakBytes: busyMem, SumMemoryPeakBytes: sumMem,
		}
	}
}

// added computes what c adds over base, by both methods.
func added(c, base *Cell, seed uint64) *Added {
	if c.Pooled == nil || base.Pooled == nil {
		return nil
	}
	a := &Added{PerRun: map[string]Stat{}, Pooled: map[string]int64{}}
	for _, key := range hist.Keys {
		pc, pb := c.PerRun[key], base.PerRun[key]
		a.PerRun[key] = Stat{Mean: pc.Mean - pb.Mean, SD: math.Hypot(pc.SD, pb.SD), N: min(pc.N, pb.N)}
		vc, _ := c.Pooled.At(key)
		vb, _ := base.Pooled.At(key)
		a.Pooled[key] = vc - vb
	}
	if len(c.kept) >= MinBootstrapRuns && len(base.kept) >= MinBootstrapRuns {
		a.PooledCI = BootstrapDiffCI(c.kept, base.kept, BootstrapRounds, seed)
		a.PooledCIMethod = "bootstrap over runs (each scenario's runs resampled independently)"
		return a
	}
	a.PooledCI = map[string]Interval{}
	for key, ic := range c.CIOrderStat {
		if ib, ok := base.CIOrderStat[key]; ok {
			a.PooledCI[key] = Interval{Lo: ic.Lo - ib.Hi, Hi: ic.Hi - ib.Lo}
		}
	}
	a.PooledCIMethod = "order statistics (difference of the two 95% intervals' far ends: conservative; sampling error only)"
	return a
}
