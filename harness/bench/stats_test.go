package bench

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/hopscope/hopscope/hist"
)

func TestMeanSD(t *testing.T) {
	cases := []struct {
		xs       []float64
		mean, sd float64
	}{
		// sum 40, squared deviations 9+1+1+1+0+0+4+16 = 32, n-1 = 7
		{[]float64{2, 4, 4, 4, 5, 5, 7, 9}, 5, math.Sqrt(32.0 / 7)},
		{[]float64{3}, 3, 0},
		// deviations -1.5 -0.5 0.5 1.5: 5/3
		{[]float64{1, 2, 3, 4}, 2.5, math.Sqrt(5.0 / 3)},
	}
	for _, c := range cases {
		m, s := MeanSD(c.xs)
		if math.Abs(m-c.mean) > 1e-12 || math.Abs(s-c.sd) > 1e-12 {
			t.Errorf("MeanSD(%v) = %v, %v; want %v, %v", c.xs, m, s, c.mean, c.sd)
		}
	}
	if m, s := MeanSD(nil); !math.IsNaN(m) || !math.IsNaN(s) {
		t.Errorf("MeanSD(nil) = %v, %v; want NaN", m, s)
	}
}

// expSamples draws n exponential latencies with the given mean (ns), plus
// shift.
func expSamples(rng *rand.Rand, n int, meanNs, shift float64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(shift + rng.ExpFloat64()*meanNs)
	}
	return out
}

func histOf(xs []int64) *hdrhistogram.Histogram {
	h := hist.New()
	for _, x := range xs {
		hist.Record(h, x)
	}
	return h
}

// exactAt is the sample percentile of the raw values, with the same rank rule
// (round(q*n), at least 1), computed on a sorted copy.
func exactAt(xs []int64, q float64) int64 {
	s := append([]int64(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	r := int(q/100*float64(len(s)) + 0.5)
	if r < 1 {
		r = 1
	}
	return s[r-1]
}

// within reports whether got is within the histogram's 3 significant digits
// (0.1%, one bucket) of want.
func within(got, want int64) bool {
	d := math.Abs(float64(got - want))
	return d <= float64(want)/1000+1
}

func TestPooledPercentilesMatchRawSamples(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var all []int64
	var hs []*hdrhistogram.Histogram
	for i := range 5 {
		xs := expSamples(rng, 3000, 1e6, float64(i)*2e5)
		all = append(all, xs...)
		hs = append(hs, histOf(xs))
	}
	m := Merge(hs)
	if m.TotalCount() != int64(len(all)) {
		t.Fatalf("merged count %d, want %d", m.TotalCount(), len(all))
	}
	p := newPool(hs)
	w := []int{1, 1, 1, 1, 1}
	out := make([]int64, len(hist.Keys))
	if !p.percentiles(w, out) {
		t.Fatal("no samples")
	}
	for k, key := range hist.Keys {
		want := exactAt(all, quantileOf(key))
		if key == "max" {
			want = slicesMax(all)
		}
		if !within(out[k], want) {
			t.Errorf("pool %s = %d, raw samples give %d", key, out[k], want)
		}
		if lib := m.ValueAtQuantile(quantileOf(key)); out[k] != lib && key != "max" {
			t.Errorf("pool %s = %d, merged histogram says %d", key, out[k], lib)
		}
	}
	if out[len(out)-1] != m.Max() {
		t.Errorf("pool max %d, merged histogram max %d", out[len(out)-1], m.Max())
	}
	// Weights are copies: run 0 twice is run 0's samples twice.
	twice := histOf(append(append([]int64(nil), all[:3000]...), all[:3000]...))
	if !p.percentiles([]int{2, 0, 0, 0, 0}, out) {
		t.Fatal("no samples")
	}
	for k, key := range hist.Keys[:len(hist.Keys)-1] {
		if lib := twice.ValueAtQuantile(quantileOf(key)); out[k] != lib {
			t.Errorf("weight 2 %s = %d, histogram of doubled samples %d", key, out[k], lib)
		}
	}
}

func slicesMax(xs []int64) int64 {
	m := xs[0]
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func TestOrderStatCIRanks(t *testing.T) {
	// n = 10000, q = 0.5: half-width 1.96*sqrt(2500) = 98, ranks 4902 and
	// 5099 (ceil(5098)+1).
	rng := rand.New(rand.NewPCG(3, 4))
	xs := expSamples(rng, 10000, 1e6, 0)
	s := append([]int64(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	ci, ok := OrderStatCI(histOf(xs), "p50")
	if !ok {
		t.Fatal("no interval")
	}
	if !within(ci.Lo, s[4902-1]) || !within(ci.Hi, s[5099-1]) {
		t.Errorf("p50 CI %v, want [%d, %d]", ci, s[4901], s[5098])
	}
	if _, ok := OrderStatCI(histOf(xs), "max"); ok {
		t.Error("max must have no order-statistic interval")
	}
	if _, ok := OrderStatCI(hist.New(), "p50"); ok {
		t.Error("empty histogram must have no interval")
	}
}

// The order-statistic interval covers the true quantile of independent
// samples about 95% of the time.
func TestOrderStatCICoverage(t *testing.T) {
	const trials, n, meanNs = 400, 2000, 1e6
	rng := rand.New(rand.NewPCG(5, 6))
	for _, key := range []string{"p50", "p90", "p99"} {
		q := quantileOf(key) / 100
		truth := -math.Log(1-q) * meanNs
		hit := 0
		for range trials {
			ci, _ := OrderStatCI(histOf(expSamples(rng, n, meanNs, 0)), key)
			// The bucket's highest value stands for the bucket: widen by it.
			if float64(ci.Lo)*(1-1e-3) <= truth && truth <= float64(ci.Hi) {
				hit++
			}
		}
		cov := float64(hit) / trials
		if cov < 0.91 || cov > 0.99 {
			t.Errorf("%s: coverage %.3f, want about 0.95", key, cov)
		}
	}
}

// mixtureQuantile is the q-quantile of shift + Exp(mean) with shift drawn
// from the given equally likely values, by bisection on the mixture's CDF.
func mixtureQuantile(q, meanNs float64, shifts []float64) float64 {
	cdf := func(x float64) float64 {
		var f float64
		for _, s := range shifts {
			if x > s {
				f += 1 - math.Exp(-(x-s)/meanNs)
			}
		}
		return f / float64(len(shifts))
	}
	lo, hi := 0.0, 100*meanNs
	for range 200 {
		mid := (lo + hi) / 2
		if cdf(mid) < q {
			lo = mid
		} else {
			hi = mid
		}
	}
	return (lo + hi) / 2
}

// When runs differ (drift, a noisy neighbour), the bootstrap over runs covers
// the quantile of the population of runs far better than the order-statistic
// interval, which only knows the samples.
func TestBootstrapCICoverageWithRunEffects(t *testing.T) {
	const (
		trials, runs, n = 120, 8, 400
		meanNs, sdRun   = 1e6, 4e5
	)
	// The run effect's population: a fine grid of normal quantiles, shifted
	// so no latency is negative.
	var shifts []float64
	for i := 1; i < 400; i++ {
		shifts = append(shifts, 2e6+sdRun*math.Sqrt2*math.Erfinv(2*float64(i)/400-1))
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for _, key := range []string{"p50", "p90"} {
		truth := mixtureQuantile(quantileOf(key)/100, meanNs, shifts)
		bootHit, osHit := 0, 0
		for trial := range trials {
			var hs []*hdrhistogram.Histogram
			for range runs {
				hs = append(hs, histOf(expSamples(rng, n, meanNs, 2e6+rng.NormFloat64()*sdRun)))
			}
			bci := BootstrapCI(hs, 300, uint64(trial))[key]
			if float64(bci.Lo)*(1-1e-3) <= truth && truth <= float64(bci.Hi) {
				bootHit++
			}
			oci, _ := OrderStatCI(Merge(hs), key)
			if float64(oci.Lo)*(1-1e-3) <= truth && truth <= float64(oci.Hi) {
				osHit++
			}
		}
		boot, os := float64(bootHit)/trials, float64(osHit)/trials
		t.Logf("%s: bootstrap coverage %.2f, order-statistic %.2f", key, boot, os)
		if boot < 0.75 {
			t.Errorf("%s: bootstrap coverage %.2f, want >= 0.75 with %d runs", key, boot, runs)
		}
		if boot <= os {
			t.Errorf("%s: bootstrap coverage %.2f not above order-statistic %.2f under run effects", key, boot, os)
		}
	}
}

func TestBootstrapCIBounds(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	xs := expSamples(rng, 2000, 1e6, 0)
	same := []*hdrhistogram.Histogram{histOf(xs), histOf(xs), histOf(xs)}
	ci := BootstrapCI(same, 200, 1)
	for _, key := range hist.Keys {
		want := same[0].ValueAtQuantile(quantileOf(key))
		if key == "max" {
			want = same[0].Max()
		}
		if got := ci[key]; got.Lo != want || got.Hi != want {
			t.Errorf("identical runs: %s CI %v, want [%d, %d]", key, got, want, want)
		}
	}
	// Any mixture's quantile lies between its components' quantiles.
	var hs []*hdrhistogram.Histogram
	for i := range 6 {
		hs = append(hs, histOf(expSamples(rng, 2000, 1e6, float64(i)*3e5)))
	}
	ci = BootstrapCI(hs, 500, 2)
	for _, key := range hist.Keys {
		lo, hi := int64(math.MaxInt64), int64(0)
		for _, h := range hs {
			v := h.ValueAtQuantile(quantileOf(key))
			lo, hi = min(lo, v), max(hi, v)
		}
		got := ci[key]
		if got.Lo > got.Hi || got.Lo < lo*999/1000 || got.Hi > hi*1001/1000 {
			t.Errorf("%s CI %v outside the runs' range [%d, %d]", key, got, lo, hi)
		}
	}
}

func TestBootstrapDiffCI(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const shift = 2e6 // a proxy adding exactly 2 ms to every request
	var base, prox []*hdrhistogram.Histogram
	for i := range 5 {
		xs := expSamples(rng, 3000, 1e6, float64(i)*1e5)
		ys := make([]int64, len(xs))
		for j, x := range xs {
			ys[j] = x + shift
		}
		base = append(base, histOf(xs))
		prox = append(prox, histOf(ys))
	}
	ci := BootstrapDiffCI(prox, base, 500, 3)
	for _, key := range []string{"p50", "p90", "p99"} {
		pooled := Merge(prox).ValueAtQuantile(quantileOf(key)) - Merge(base).ValueAtQuantile(quantileOf(key))
		got := ci[key]
		if got.Lo > pooled || got.Hi < pooled {
			t.Errorf("%s: diff CI %v misses the pooled difference %d", key, got, pooled)
		}
		// The true added latency is 2 ms; run-to-run spread is 0.4 ms.
		if float64(got.Lo) > shift*1.01 || float64(got.Hi) < shift*0.99 {
			t.Errorf("%s: diff CI %v misses the true 2 ms", key, got)
		}
	}
}
