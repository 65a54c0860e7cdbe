package report

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hopscope/hopscope/harness/bench"
	"github.com/hopscope/hopscope/hist"
)

// Write writes summary.md and report.html into dir.
func Write(dir string, e *bench.Experiment) error {
	if err := os.WriteFile(filepath.Join(dir, bench.SummaryFile), []byte(Summary(e)), 0o644); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, bench.ReportFile), HTML(e), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// ms formats nanoseconds as milliseconds with microsecond resolution.
func ms(ns float64) string {
	if math.IsNaN(ns) {
		return "–"
	}
	return fmt.Sprintf("%.3f", ns/1e6)
}

func signedMs(ns float64) string {
	if ns >= 0 {
		return "+" + ms(ns)
	}
	return ms(ns)
}

// stat formats a per-run statistic: the mean, and ± one sd when there are
// several runs.
func stat(s bench.Stat) string {
	if s.N == 0 {
		return "–"
	}
	if s.N == 1 {
		return ms(s.Mean)
	}
	return ms(s.Mean) + " ± " + ms(s.SD)
}

func signedStat(s bench.Stat) string {
	if s.N == 0 {
		return "–"
	}
	if s.N == 1 {
		return signedMs(s.Mean)
	}
	return signedMs(s.Mean) + " ± " + ms(s.SD)
}

// ci returns the cell's preferred interval for key and its method's short
// name: the bootstrap over runs where there are enough runs, else the
// order statistic.
func ci(c *bench.Cell, key string) (bench.Interval, string, bool) {
	if iv, ok := c.CIRuns[key]; ok {
		return iv, "boot", true
	}
	if iv, ok := c.CIOrderStat[key]; ok {
		return iv, "os", true
	}
	return bench.Interval{}, "", false
}

func proxies(e *bench.Experiment) []bench.Scenario {
	var out []bench.Scenario
	for _, s := range e.Config.Scenarios {
		if !s.IsBaseline() {
			out = append(out, s)
		}
	}
	return out
}

func baselineName(e *bench.Experiment) string {
	for _, s := range e.Config.Scenarios {
		if s.IsBaseline() {
			return s.Name
		}
	}
	return ""
}

// Summary renders summary.md.
func Summary(e *bench.Experiment) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	cfg := e.Config
	p("# hopscope: %s\n\n", e.Name)
	preset := "custom"
	if cfg.Preset != "" {
		preset = "preset " + cfg.Preset
	}
	runs := "1 run"
	if cfg.Runs != 1 {
		runs = fmt.Sprintf("%d runs", cfg.Runs)
	}
	p("%s · %s per cell, each %v measured after %v warm-up", preset, runs,
		time.Duration(cfg.Duration), time.Duration(cfg.Warmup))
	if cfg.DropHighestBaselineMax > 0 {
		p(", the %d run(s) with the highest baseline max dropped at each rate", cfg.DropHighestBaselineMax)
	}
	p(" · probe %s · %s backend\n\n", cfg.Probe, e.Environment.Backend)
	env := e.Environment
	p("%s · %s (%d CPUs) · kernel %s · %s · hopscope %s", e.Started.UTC().Format("2006-01-02 15:04 UTC"),
		env.CPU, env.CPUs, env.Kernel, env.GoVersion, env.Hopscope)
	if len(env.Proxies) > 0 {
		var vs []string
		for _, k := range sortedKeys(env.Proxies) {
			vs = append(vs, k+" "+env.Proxies[k])
		}
		p(" · %s", strings.Join(vs, ", "))
	}
	p("\n\nStatus: **%s**, wall time %v.\n\n", e.Status, time.Duration(e.WallTimeNs).Round(time.Second))

	base := baselineName(e)
	writeFindings(&b, e, base)
	for _, rate := range cfg.RatesRPS {
		writeRate(&b, e, base, rate)
	}
	writeResources(&b, e)
	writeHops(&b, e)
	writeRunNotes(&b, e)
	writeMethod(&b, e)
	return b.String()
}

// writeFindings is the published table: per rate, baseline p50 / max and
// what each proxy adds at p50 / max (mean of per-run percentiles).
func writeFindings(b *strings.Builder, e *bench.Experiment, base string) {
	ps := proxies(e)
	if base == "" || len(ps) == 0 {
		return
	}
	fmt.Fprintf(b, "## Findings\n\nLatency added over baseline, as the published reports give it (mean of the kept runs' percentiles, ms).\n\n")
	fmt.Fprintf(b, "| rate (RPS) | baseline p50 / max (ms) |")
	for _, s := range ps {
		fmt.Fprintf(b, " %s added p50 / max (ms) |", s.Name)
	}
	fmt.Fprintf(b, "\n|---|---|%s\n", strings.Repeat("---|", len(ps)))
	for _, rate := range e.Config.RatesRPS {
		bc := e.Cell(base, rate)
		fmt.Fprintf(b, "| %d | %s / %s |", rate, perRunMean(bc, "p50"), perRunMean(bc, "max"))
		for _, s := range ps {
			c := e.Cell(s.Name, rate)
			if c != nil && len(c.Kept) == 0 && len(c.Runs) > 0 {
				fmt.Fprintf(b, " invalid |")
				continue
			}
			if c == nil || c.Added == nil {
				fmt.Fprintf(b, " – |")
				continue
			}
			fmt.Fprintf(b, " %s / %s |", signedMs(c.Added.PerRun["p50"].Mean), signedMs(c.Added.PerRun["max"].Mean))
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
}

func perRunMean(c *bench.Cell, key string) string {
	if c == nil || c.PerRun == nil {
		return "–"
	}
	return ms(c.PerRun[key].Mean)
}

func writeRate(b *strings.Builder, e *bench.Experiment, base string, rate int) {
	fmt.Fprintf(b, "## %d RPS\n\n", rate)
	fmt.Fprintf(b, "Mean ± sd of the kept runs' percentiles (the published statistic), ms:\n\n")
	fmt.Fprintf(b, "| scenario | runs kept | achieved (RPS) | p50 (ms) | p99 (ms) | max (ms) | added p50 (ms) | added p99 (ms) | added max (ms) |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range e.Config.Scenarios {
		c := e.Cell(s.Name, rate)
		if c == nil {
			continue
		}
		ach := "–"
		if c.AchievedRPS != nil {
			ach = fmt.Sprintf("%.1f", c.AchievedRPS.Mean)
		}
		fmt.Fprintf(b, "| %s | %d of %d | %s | %s | %s | %s |", s.Name, len(c.Kept), len(c.Runs), ach,
			stat(c.PerRun["p50"]), stat(c.PerRun["p99"]), stat(c.PerRun["max"]))
		if c.Added != nil {
			fmt.Fprintf(b, " %s | %s | %s |\n", signedStat(c.Added.PerRun["p50"]), signedStat(c.Added.PerRun["p99"]), signedStat(c.Added.PerRun["max"]))
		} else {
			fmt.Fprintf(b, " | | |\n")
		}
	}
	fmt.Fprintf(b, "\nPooled histograms of the kept runs, [95%% interval], ms:\n\n")
	fmt.Fprintf(b, "| scenario | samples | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) | added p50 (ms) | added p99 (ms) |\n")
	fmt.Fprintf(b, "|---|---|---|---|---|---|---|---|\n")
	for _, s := range e.Config.Scenarios {
		c := e.Cell(s.Name, rate)
		if c == nil || c.Pooled == nil {
			if c != nil {
				fmt.Fprintf(b, "| %s | 0 | – | – | – | – | | |\n", s.Name)
			}
			continue
		}
		fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s |", s.Name, c.Pooled.Count,
			withCI(c, "p50"), withCI(c, "p99"), withCI(c, "p99.9"), withCI(c, "max"))
		if c.Added != nil {
			fmt.Fprintf(b, " %s | %s |\n", addedWithCI(c.Added, "p50"), addedWithCI(c.Added, "p99"))
		} else {
			fmt.Fprintf(b, " | |\n")
		}
	}
	b.WriteString("\n")
	if w := winner(e, base, rate); w != "" {
		fmt.Fprintf(b, "%s\n\n", w)
	}
}

func withCI(c *bench.Cell, key string) string {
	v, _ := c.Pooled.At(key)
	s := ms(float64(v))
	if iv, _, ok := ci(c, key); ok {
		s += fmt.Sprintf(" [%s, %s]", ms(float64(iv.Lo)), ms(float64(iv.Hi)))
	}
	return s
}

func addedWithCI(a *bench.Added, key string) string {
	s := signedMs(float64(a.Pooled[key]))
	if iv, ok := a.PooledCI[key]; ok {
		s += fmt.Sprintf(" [%s, %s]", signedMs(float64(iv.Lo)), signedMs(float64(iv.Hi)))
	}
	return s
}

// winner names the proxy that adds the least at the median (pooled), p99
// breaking ties, and says whether its lead is outside the intervals.
func winner(e *bench.Experiment, base string, rate int) string {
	type cand struct {
		name     string
		p50, p99 int64
		ci       bench.Interval
		hasCI    bool
	}
	var cs []cand
	for _, s := range proxies(e) {
		c := e.Cell(s.Name, rate)
		if c == nil || c.Added == nil {
			continue
		}
		iv, ok := c.Added.PooledCI["p50"]
		cs = append(cs, cand{s.Name, c.Added.Pooled["p50"], c.Added.Pooled["p99"], iv, ok})
	}
	if len(cs) == 0 {
		return ""
	}
	sort.SliceStable(cs, func(i, j int) bool {
		if cs[i].p50 != cs[j].p50 {
			return cs[i].p50 < cs[j].p50
		}
		return cs[i].p99 < cs[j].p99
	})
	w := cs[0]
	line := fmt.Sprintf("**Winner at %d RPS: %s**, adding %s ms at p50 and %s ms at p99 over baseline (pooled)",
		rate, w.name, signedMs(float64(w.p50)), signedMs(float64(w.p99)))
	if len(cs) == 1 {
		return line + "; the only proxy measured."
	}
	r := cs[1]
	line += fmt.Sprintf("; next %s at %s / %s ms", r.name, signedMs(float64(r.p50)), signedMs(float64(r.p99)))
	if w.hasCI && r.hasCI && w.ci.Hi >= r.ci.Lo {
		line += ". Their 95% intervals at p50 overlap: not a clear win."
	} else if w.hasCI && r.hasCI {
		line += ". The intervals at p50 do not overlap."
	} else {
		line += "."
	}
	return line
}

const mib = 1 << 20

func writeResources(b *strings.Builder, e *bench.Experiment) {
	var rows []string
	for _, s := range proxies(e) {
		for _, rate := range e.Config.RatesRPS {
			c := e.Cell(s.Name, rate)
			if c == nil || c.DataPlane == nil {
				continue
			}
			dp := c.DataPlane
			src := ""
			for _, name := range sortedKeys(c.Resources) {
				if bench.IsProxySource(name) && c.Resources[name].PeakSource != "" {
					src = c.Resources[name].PeakSource
					break
				}
			}
			rows = append(rows, fmt.Sprintf("| %s | %d | %s | %s | %s | %s | %s | %s |", s.Name, rate,
				mibp(dp.BusiestMemoryPeakBytes), msUsec(dp.BusiestCPUUsec), mibp(dp.SumMemoryPeakBytes),
				msUsec(dp.SumCPUUsec), cores(dp.CPUCores), src))
		}
	}
	b.WriteString("## Resources (data plane)\n\n")
	if len(rows) == 0 {
		b.WriteString("No proxy resources were sampled")
		if r := resourcesAbsent(e); r != "" {
			b.WriteString(": " + r)
		}
		b.WriteString(".\n\n")
		return
	}
	b.WriteString("Per run, over warm-up and measured window; memory is the maximum over the kept runs, CPU the mean. Busiest: the one proxy with the most; all: client and server sidecars summed.\n\n")
	b.WriteString("| proxy | rate (RPS) | busiest max memory (MiB) | busiest CPU time (ms) | all max memory (MiB) | all CPU time (ms) | all CPU (cores) | memory peak from |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	b.WriteString(strings.Join(rows, "\n"))
	b.WriteString("\n\n")
}

func resourcesAbsent(e *bench.Experiment) string {
	for _, n := range e.Notes {
		if strings.HasPrefix(n, "resources: ") {
			return strings.TrimPrefix(n, "resources: ")
		}
	}
	return ""
}

func mibp(v *int64) string {
	if v == nil {
		return "absent"
	}
	return fmt.Sprintf("%.1f", float64(*v)/mib)
}

func msUsec(v *float64) string {
	if v == nil {
		return "absent"
	}
	return fmt.Sprintf("%.1f", *v/1e3)
}

func cores(v *float64) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf("%.3f", *v)
}

// writeHops is each proxy's hop breakdown next to the client's view.
func writeHops(b *strings.Builder, e *bench.Experiment) {
	b.WriteString("## Where the time goes (probe)\n\n")
	any := false
	for _, s := range proxies(e) {
		var cells []*bench.Cell
		for _, rate := range e.Config.RatesRPS {
			if c := e.Cell(s.Name, rate); c != nil {
				cells = append(cells, c)
			}
		}
		hasHops := false
		for _, c := range cells {
			hasHops = hasHops || len(c.Hops) > 0
		}
		if !hasHops {
			continue
		}
		any = true
		fmt.Fprintf(b, "### %s\n\np50 / p99 / max in ms, pooled over the kept runs with hops.\n\n| view |", s.Name)
		for _, c := range cells {
			fmt.Fprintf(b, " %d RPS |", c.RateRPS)
		}
		fmt.Fprintf(b, "\n|---|%s\n", strings.Repeat("---|", len(cells)))
		fmt.Fprintf(b, "| client (end to end) |")
		for _, c := range cells {
			if c.Pooled == nil {
				fmt.Fprintf(b, " – |")
				continue
			}
			fmt.Fprintf(b, " %s / %s / %s |", ms(float64(c.Pooled.P50)), ms(float64(c.Pooled.P99)), ms(float64(c.Pooled.Max)))
		}
		b.WriteString("\n")
		for _, hop := range hopOrder(cells) {
			fmt.Fprintf(b, "| %s |", hop)
			for _, c := range cells {
				h, ok := c.Hops[hop]
				if !ok || h.Count == 0 {
					fmt.Fprintf(b, " – |")
					continue
				}
				fmt.Fprintf(b, " %s / %s / %s |", ms(float64(h.P50)), ms(float64(h.P99)), ms(float64(h.Max)))
			}
			b.WriteString("\n")
		}
		b.WriteString("\n")
	}
	if !any {
		if why := probeAbsent(e); why != "" {
			b.WriteString("No hops were measured: " + why + ".\n\n")
		} else {
			b.WriteString("No valid proxy run has hops (see the runs left out).\n\n")
		}
	}
}

// hopOrder lists the hops the cells have: DESIGN.md's order, then others.
func hopOrder(cells []*bench.Cell) []string {
	have := map[string]bool{}
	for _, c := range cells {
		for h := range c.Hops {
			have[h] = true
		}
	}
	var out []string
	for _, h := range bench.HopNames {
		if have[h] {
			out = append(out, h)
			delete(have, h)
		}
	}
	return append(out, sortedKeys(have)...)
}

// probeAbsent gives the distinct reasons the runs had no probe.
func probeAbsent(e *bench.Experiment) string {
	seen := map[string]bool{}
	var out []string
	for _, r := range e.Runs {
		if r.Probe == bench.ProbeStateOK || seen[r.Probe] {
			continue
		}
		seen[r.Probe] = true
		out = append(out, r.Probe)
	}
	return strings.Join(out, "; ")
}

func writeRunNotes(b *strings.Builder, e *bench.Experiment) {
	var inv, drop []string
	for _, r := range e.Runs {
		if !r.Valid {
			inv = append(inv, fmt.Sprintf("- %s: %s", r.ID, strings.Join(r.InvalidReasons, "; ")))
		}
		if r.Dropped {
			drop = append(drop, r.ID)
		}
	}
	if len(inv) == 0 && len(drop) == 0 && len(e.Skipped) == 0 && len(e.Notes) == 0 {
		return
	}
	b.WriteString("## Runs left out\n\n")
	for _, s := range e.Skipped {
		if s.RateRPS == 0 {
			fmt.Fprintf(b, "- %s skipped: %s\n", s.Scenario, s.Reason)
		} else {
			fmt.Fprintf(b, "- %s at %d RPS skipped: %s\n", s.Scenario, s.RateRPS, s.Reason)
		}
	}
	if len(inv) > 0 {
		b.WriteString("Invalid, kept out of every aggregate:\n\n" + strings.Join(inv, "\n") + "\n")
	}
	if len(drop) > 0 {
		fmt.Fprintf(b, "\nDropped by the baseline-max rule: %s\n", strings.Join(drop, ", "))
	}
	for _, n := range e.Notes {
		fmt.Fprintf(b, "- %s\n", n)
	}
	b.WriteString("\n")
}

func writeMethod(b *strings.Builder, e *bench.Experiment) {
	r := e.Config.Rules
	fmt.Fprintf(b, "## Method\n\n")
	fmt.Fprintf(b, "Open-loop load (latency from each request's due time); each run on a freshly built %s; runs interleaved (run 1 of every scenario and rate before any run 2). "+
		"A run is invalid when its achieved rate is more than %.1f%% below the target, more than %.2f%% of its requests fail, or the probe lost more than %d events. "+
		"Mean ± sd: over the kept runs' own percentiles, as published. Pooled: the kept runs' HdrHistograms merged; "+
		"[95%% interval] by bootstrap over runs (%d resamples) where a cell has at least %d kept runs, else from the pooled counts' order statistics "+
		"(assumes independent samples: sampling error only, narrower than run-to-run variation). "+
		"Percentiles: %s.\n", e.Environment.Backend, 100*r.MaxRateShortfall, 100*r.MaxErrorRatio, r.MaxProbeDrops,
		bench.BootstrapRounds, bench.MinBootstrapRuns, strings.Join(hist.Keys, ", "))
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
