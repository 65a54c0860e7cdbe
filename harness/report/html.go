package report

import (
	"fmt"
	"html"
	"math"
	"strings"

	"github.com/hopscope/hopscope/harness/bench"
	"github.com/hopscope/hopscope/hist"
)

var palette = []string{"#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"}

// HTML renders report.html: self-contained, charts as inline SVG, no
// scripts and nothing fetched.
func HTML(e *bench.Experiment) []byte {
	var b strings.Builder
	esc := html.EscapeString
	fmt.Fprintf(&b, `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hopscope: %s</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1,h2,h3{font-weight:600} svg{background:#fff;border:1px solid #ddd;margin:.5em 0}
text{font-size:12px;fill:#333} .axis{stroke:#999} .grid{stroke:#eee}
pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:12px}
.note{color:#555;font-size:13px}
</style></head><body>
<h1>hopscope: %s</h1>
<p class="note">status %s · %s · kernel %s · %d CPUs · %s</p>
`, esc(e.Name), esc(e.Name), esc(e.Status), esc(e.Environment.CPU), esc(e.Environment.Kernel), e.Environment.CPUs, esc(e.Environment.Backend))

	b.WriteString("<h2>Client latency by percentile</h2>\n<p class=\"note\">Pooled histograms of the kept runs; whiskers: 95% interval (bootstrap over runs where there are enough runs, else order statistics). Log scale.</p>\n")
	for _, rate := range e.Config.RatesRPS {
		fmt.Fprintf(&b, "<h3>%d RPS</h3>\n", rate)
		b.WriteString(percentileChart(e, rate))
	}
	if base := baselineName(e); base != "" && len(proxies(e)) > 0 {
		b.WriteString("<h2>Latency added over baseline</h2>\n<p class=\"note\">Pooled percentile of each proxy minus baseline's, with the 95% interval of the difference. The tail above p99 is left out: in short runs it is a handful of samples.</p>\n")
		for _, rate := range e.Config.RatesRPS {
			fmt.Fprintf(&b, "<h3>%d RPS</h3>\n", rate)
			b.WriteString(addedChart(e, rate))
		}
	}
	if s := hopCharts(e); s != "" {
		b.WriteString("<h2>Where the time goes</h2>\n<p class=\"note\">Median of each hop, stacked (client/send and client/recv: the load generator's own time, from joining its records), next to the client's median latency from the due time (the black mark). Medians do not add exactly; the rest of the gap is send lag and what no hop covers.</p>\n")
		b.WriteString(s)
	}
	if s := resourceChart(e); s != "" {
		b.WriteString("<h2>Data plane resources</h2>\n")
		b.WriteString(s)
	}
	b.WriteString("<h2>Summary</h2>\n<pre>")
	b.WriteString(esc(Summary(e)))
	b.WriteString("</pre>\n</body></html>\n")
	return []byte(b.String())
}

type series struct {
	name   string
	color  string
	vals   []float64 // ms; NaN = absent
	lo, hi []float64
}

func percentileChart(e *bench.Experiment, rate int) string {
	var ss []series
	for i, s := range e.Config.Scenarios {
		c := e.Cell(s.Name, rate)
		if c == nil || c.Pooled == nil {
			continue
		}
		sr := series{name: s.Name, color: palette[i%len(palette)]}
		for _, key := range hist.Keys {
			v, _ := c.Pooled.At(key)
			sr.vals = append(sr.vals, float64(v)/1e6)
			if iv, _, ok := ci(c, key); ok {
				sr.lo = append(sr.lo, float64(iv.Lo)/1e6)
				sr.hi = append(sr.hi, float64(iv.Hi)/1e6)
			} else {
				sr.lo = append(sr.lo, math.NaN())
				sr.hi = append(sr.hi, math.NaN())
			}
		}
		ss = append(ss, sr)
	}
	if len(ss) == 0 {
		return "<p class=\"note\">No valid runs at this rate.</p>\n"
	}
	const w, h, left, right, top, bottom = 760, 320, 70, 150, 20, 40
	minV, maxV := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, arr := range [][]float64{s.vals, s.lo, s.hi} {
			for _, v := range arr {
				if v > 0 && !math.IsNaN(v) {
					minV, maxV = math.Min(minV, v), math.Max(maxV, v)
				}
			}
		}
	}
	lo, hi := math.Floor(math.Log10(minV)), math.Ceil(math.Log10(maxV))
	if hi <= lo {
		hi = lo + 1
	}
	pw, ph := float64(w-left-right), float64(h-top-bottom)
	x := func(i int) float64 { return left + pw*(float64(i)+0.5)/float64(len(hist.Keys)) }
	y := func(v float64) float64 {
		return top + ph*(1-(math.Log10(math.Max(v, math.Pow(10, lo)))-lo)/(hi-lo))
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="latency by percentile at %d RPS">`+"\n", w, h, w, h, rate)
	for d := lo; d <= hi; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if v < math.Pow(10, lo) || v > math.Pow(10, hi) {
				continue
			}
			yy := y(v)
			fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, left, w-right, yy, yy)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, yy+4, fmtMs(v))
		}
	}
	fmt.Fprintf(&b, `<line class="axis" x1="%d" x2="%d" y1="%d" y2="%d"/><line class="axis" x1="%d" x2="%d" y1="%d" y2="%d"/>`+"\n",
		left, w-right, h-bottom, h-bottom, left, left, top, h-bottom)
	for i, k := range hist.Keys {
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, x(i), h-bottom+16, k)
	}
	fmt.Fprintf(&b, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">latency (ms)</text>`+"\n", top+int(ph/2), top+int(ph/2))
	for si, s := range ss {
		var pts []string
		for i, v := range s.vals {
			if v > 0 {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(v)))
			}
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", s.color, strings.Join(pts, " "))
		for i, v := range s.vals {
			if v <= 0 {
				continue
			}
			off := float64(si-len(ss)/2) * 3 // spread whiskers so they do not hide each other
			if !math.IsNaN(s.lo[i]) {
				fmt.Fprintf(&b, `<line stroke="%s" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>`, s.color, x(i)+off, x(i)+off, y(s.lo[i]), y(s.hi[i]))
			}
			fmt.Fprintf(&b, `<circle fill="%s" cx="%.1f" cy="%.1f" r="3"><title>%s %s: %s ms</title></circle>`+"\n",
				s.color, x(i), y(v), html.EscapeString(s.name), hist.Keys[i], fmtMs(v))
		}
		ly := top + 10 + si*18
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			w-right+14, ly-10, s.color, w-right+32, ly, html.EscapeString(s.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func fmtMs(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.3g", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// hopCharts draws, per proxy and rate, the hops' medians stacked.
func hopCharts(e *bench.Experiment) string {
	type row struct {
		label  string
		hops   []float64 // ms per bench.HopNames
		client float64
	}
	var rows []row
	maxV := 0.0
	for _, s := range proxies(e) {
		for _, rate := range e.Config.RatesRPS {
			c := e.Cell(s.Name, rate)
			if c == nil || len(c.Hops) == 0 {
				continue
			}
			r := row{label: fmt.Sprintf("%s %d RPS", s.Name, rate)}
			sum := 0.0
			for _, name := range bench.HopNames {
				v := 0.0
				if h, ok := c.Hops[name]; ok && h.Count > 0 {
					v = float64(h.P50) / 1e6
				}
				r.hops = append(r.hops, v)
				sum += v
			}
			if c.Pooled != nil {
				r.client = float64(c.Pooled.P50) / 1e6
			}
			maxV = math.Max(maxV, math.Max(sum, r.client))
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 || maxV == 0 {
		return ""
	}
	ticks := niceTicks(maxV)
	maxV = ticks[len(ticks)-1]
	const w, left, right, barH, gap = 900, 150, 30, 18, 8
	// The legend wraps onto as many rows as it needs.
	var legend strings.Builder
	lx, ly := 10, 6
	for i, name := range bench.HopNames {
		iw := 13 + 7*len(name) + 14
		if lx+iw > w {
			lx, ly = 10, ly+18
		}
		fmt.Fprintf(&legend, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>`, lx, ly, palette[i%len(palette)], lx+13, ly+9, name)
		lx += iw
	}
	top := ly + 24
	h := top + len(rows)*(barH+gap) + 60
	pw := float64(w - left - right)
	x := func(v float64) float64 { return left + pw*v/maxV }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="hop medians">`+"\n", w, h, w, h)
	b.WriteString(legend.String() + "\n")
	for ri, r := range rows {
		yy := top + ri*(barH+gap)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`, left-6, yy+barH-5, html.EscapeString(r.label))
		acc := 0.0
		for i, v := range r.hops {
			if v <= 0 {
				continue
			}
			fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s p50 %s ms</title></rect>`,
				x(acc), yy, x(acc+v)-x(acc), barH, palette[i%len(palette)], bench.HopNames[i], fmtMs(v))
			acc += v
		}
		if r.client > 0 {
			fmt.Fprintf(&b, `<line stroke="#000" stroke-width="3" x1="%.1f" x2="%.1f" y1="%d" y2="%d"><title>client p50 %s ms</title></line>`,
				x(r.client), x(r.client), yy-2, yy+barH+2, fmtMs(r.client))
		}
		b.WriteString("\n")
	}
	axisY := top + len(rows)*(barH+gap) + 4
	fmt.Fprintf(&b, `<line class="axis" x1="%d" x2="%d" y1="%d" y2="%d"/>`, left, w-right, axisY, axisY)
	for _, v := range ticks {
		fmt.Fprintf(&b, `<line class="grid" x1="%.1f" x2="%.1f" y1="%d" y2="%d"/><text x="%.1f" y="%d" text-anchor="middle">%s</text>`,
			x(v), x(v), top-4, axisY, x(v), axisY+16, fmtMs(v))
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">ms</text>`+"\n</svg>\n", left+int(pw/2), axisY+34)
	return b.String()
}

// resourceChart draws each proxy's busiest maximum memory and summed CPU
// time per rate as bars.
func resourceChart(e *bench.Experiment) string {
	type bar struct {
		label string
		mem   float64 // MiB, NaN absent
		cpu   float64 // ms, NaN absent
	}
	var bars []bar
	maxMem, maxCPU := 0.0, 0.0
	for _, s := range proxies(e) {
		for _, rate := range e.Config.RatesRPS {
			c := e.Cell(s.Name, rate)
			if c == nil || c.DataPlane == nil {
				continue
			}
			br := bar{label: fmt.Sprintf("%s %d RPS", s.Name, rate), mem: math.NaN(), cpu: math.NaN()}
			if v := c.DataPlane.BusiestMemoryPeakBytes; v != nil {
				br.mem = float64(*v) / mib
				maxMem = math.Max(maxMem, br.mem)
			}
			if v := c.DataPlane.SumCPUUsec; v != nil {
				br.cpu = *v / 1e3
				maxCPU = math.Max(maxCPU, br.cpu)
			}
			bars = append(bars, br)
		}
	}
	if len(bars) == 0 {
		return ""
	}
	const w, left, colW, barH, gap, top = 900, 150, 280, 16, 6, 30
	h := top + len(bars)*(barH+gap) + 20
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="proxy resources">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<text x="%d" y="16">busiest proxy max memory (MiB)</text><text x="%d" y="16">all proxies CPU time per run (ms)</text>`+"\n", left, left+colW+60)
	for i, br := range bars {
		yy := top + i*(barH+gap)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`, left-6, yy+barH-4, html.EscapeString(br.label))
		for j, v := range []float64{br.mem, br.cpu} {
			x0 := left + j*(colW+60)
			mx := maxMem
			if j == 1 {
				mx = maxCPU
			}
			if math.IsNaN(v) || mx == 0 {
				fmt.Fprintf(&b, `<text x="%d" y="%d">absent</text>`, x0, yy+barH-4)
				continue
			}
			bw := float64(colW) * v / mx
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/><text x="%.1f" y="%d">%.1f</text>`,
				x0, yy, bw, barH, palette[j], float64(x0)+bw+4, yy+barH-4, v)
		}
		b.WriteString("\n")
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceTicks returns 0 and evenly spaced round values (1, 2 or 5 times a
// power of ten) up to at least max.
func niceTicks(max float64) []float64 {
	raw := max / 4
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := mag
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var out []float64
	for v := 0.0; ; v += step {
		out = append(out, v)
		if v >= max {
			return out
		}
	}
}

// addedKeys are the percentiles the added-latency chart shows.
var addedKeys = []string{"p50", "p75", "p90", "p99"}

// addedChart draws, per percentile, one bar per proxy: its pooled added
// latency, with the interval as a whisker.
func addedChart(e *bench.Experiment, rate int) string {
	type bar struct {
		name, color string
		v, lo, hi   []float64 // ms per addedKeys; NaN absent
	}
	var bars []bar
	minV, maxV := 0.0, 0.0
	for i, s := range e.Config.Scenarios {
		c := e.Cell(s.Name, rate)
		if s.IsBaseline() || c == nil || c.Added == nil {
			continue
		}
		br := bar{name: s.Name, color: palette[i%len(palette)]}
		for _, k := range addedKeys {
			v := float64(c.Added.Pooled[k]) / 1e6
			lo, hi := math.NaN(), math.NaN()
			if iv, ok := c.Added.PooledCI[k]; ok {
				lo, hi = float64(iv.Lo)/1e6, float64(iv.Hi)/1e6
				minV, maxV = math.Min(minV, lo), math.Max(maxV, hi)
			}
			minV, maxV = math.Min(minV, v), math.Max(maxV, v)
			br.v, br.lo, br.hi = append(br.v, v), append(br.lo, lo), append(br.hi, hi)
		}
		bars = append(bars, br)
	}
	if len(bars) == 0 {
		return "<p class=\"note\">No proxy has valid runs at this rate.</p>\n"
	}
	const w, h, left, right, top, bottom = 760, 300, 70, 150, 20, 40
	// One step for both sides of zero.
	step := niceTicks(math.Max(maxV-minV, 1e-3))[1]
	yMax := math.Max(step, math.Ceil(maxV/step-1e-9)*step)
	yMin := math.Min(0, math.Floor(minV/step+1e-9)*step)
	var ticks []float64
	for t := yMin; t <= yMax+step/2; t += step {
		ticks = append(ticks, math.Round(t/step)*step)
	}
	pw, ph := float64(w-left-right), float64(h-top-bottom)
	y := func(v float64) float64 { return top + ph*(yMax-v)/(yMax-yMin) }
	group := pw / float64(len(addedKeys))
	bw := group * 0.8 / float64(len(bars))
	var b strings.Builder
	fmt.Fprintf(&b, `<svg width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="added latency at %d RPS">`+"\n", w, h, w, h, rate)
	for _, t := range ticks {
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			left, w-right, y(t), y(t), left-6, y(t)+4, fmtMs(t))
	}
	fmt.Fprintf(&b, `<line class="axis" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`+"\n", left, w-right, y(0), y(0))
	fmt.Fprintf(&b, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">added (ms)</text>`+"\n", top+int(ph/2), top+int(ph/2))
	for ki, k := range addedKeys {
		gx := left + group*float64(ki)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`, gx+group/2, h-bottom+16, k)
		for bi, br := range bars {
			x0 := gx + group*0.1 + bw*float64(bi)
			v := br.v[ki]
			y0, y1 := y(math.Max(v, 0)), y(math.Min(v, 0))
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %+.3f ms</title></rect>`,
				x0, y0, bw*0.9, math.Max(y1-y0, 0.5), br.color, html.EscapeString(br.name), k, v)
			if !math.IsNaN(br.lo[ki]) {
				cx := x0 + bw*0.45
				fmt.Fprintf(&b, `<line stroke="#333" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>`, cx, cx, y(br.lo[ki]), y(br.hi[ki]))
			}
		}
		b.WriteString("\n")
	}
	for bi, br := range bars {
		ly := top + 10 + bi*18
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			w-right+14, ly-10, br.color, w-right+32, ly, html.EscapeString(br.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}
