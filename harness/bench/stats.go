package bench

import (
	"math"
	"math/rand/v2"
	"sort"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/hopscope/hopscope/hist"
)

// MeanSD returns the mean and the sample standard deviation (n-1 in the
// denominator, as the published error bars) of xs. One value has sd 0; none
// gives NaN for both.
func MeanSD(xs []float64) (mean, sd float64) {
	if len(xs) == 0 {
		return math.NaN(), math.NaN()
	}
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	if len(xs) == 1 {
		return mean, 0
	}
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(xs)-1))
}

// Interval is a confidence interval in nanoseconds.
type Interval struct {
	Lo int64 `json:"lo"`
	Hi int64 `json:"hi"`
}

// The confidence level of every interval hopscope reports, and its normal
// quantile.
const (
	Confidence = 0.95
	z95        = 1.959963984540054
)

// quantileOf maps a percentile key (hist.Keys) to the percentile hdrhistogram
// takes; "max" is 100.
func quantileOf(key string) float64 {
	switch key {
	case "max":
		return 100
	case "p50":
		return 50
	case "p75":
		return 75
	case "p90":
		return 90
	case "p99":
		return 99
	case "p99.9":
		return 99.9
	case "p99.99":
		return 99.99
	}
	panic("bench: unknown percentile key " + key)
}

// dist is a histogram reduced to its non-empty buckets, each named by its
// highest equivalent value: the value hdrhistogram reports for a percentile
// that falls in the bucket.
type dist struct {
	vals   []int64
	counts []int64
	total  int64
}

func distOf(h *hdrhistogram.Histogram) dist {
	var d dist
	for _, b := range h.Distribution() {
		if b.Count == 0 {
			continue
		}
		d.vals = append(d.vals, b.To)
		d.counts = append(d.counts, b.Count)
		d.total += b.Count
	}
	return d
}

// rankOf is hdrhistogram-go's rank for a percentile: round(p/100*n), at
// least 1; so a value from a dist equals ValueAtQuantile on the histogram.
func rankOf(p float64, total int64) int64 {
	r := int64(p/100*float64(total) + 0.5)
	if r < 1 {
		r = 1
	}
	if r > total {
		r = total
	}
	return r
}

// atRank returns the value of the r-th smallest sample (1-based).
func (d dist) atRank(r int64) int64 {
	var cum int64
	for i, c := range d.counts {
		cum += c
		if cum >= r {
			return d.vals[i]
		}
	}
	if len(d.vals) == 0 {
		return 0
	}
	return d.vals[len(d.vals)-1]
}

// OrderStatCI returns the distribution-free confidence interval of the
// percentile key of h from its counts: the values at the ranks
// n*q -/+ z*sqrt(n*q*(1-q)) (the normal approximation of the binomial
// number of samples below the true quantile). It assumes the samples are
// independent, which consecutive latencies are not quite: it reflects
// sampling error within the pooled runs, not run-to-run variation (the
// bootstrap over runs does). It has no interval for "max" (ok false).
func OrderStatCI(h *hdrhistogram.Histogram, key string) (Interval, bool) {
	return distOf(h).orderStatCI(key)
}

func (d dist) orderStatCI(key string) (Interval, bool) {
	q := quantileOf(key) / 100
	if d.total == 0 || q >= 1 {
		return Interval{}, false
	}
	n := float64(d.total)
	half := z95 * math.Sqrt(n*q*(1-q))
	lo := int64(math.Floor(n*q - half))
	hi := int64(math.Ceil(n*q+half)) + 1
	if lo < 1 {
		lo = 1
	}
	if hi > d.total {
		hi = d.total
	}
	return Interval{Lo: d.atRank(lo), Hi: d.atRank(hi)}, true
}

// pool is a set of runs' histograms on the union of their buckets, so that a
// resample of runs is a weighted sum of count vectors.
type pool struct {
	vals   []int64   // union of non-empty buckets, ascending
	counts [][]int64 // per run, over vals
	totals []int64
}

func newPool(hs []*hdrhistogram.Histogram) *pool {
	ds := make([]dist, len(hs))
	seen := map[int64]bool{}
	p := &pool{}
	for i, h := range hs {
		ds[i] = distOf(h)
		for _, v := range ds[i].vals {
			if !seen[v] {
				seen[v] = true
				p.vals = append(p.vals, v)
			}
		}
	}
	sort.Slice(p.vals, func(i, j int) bool { return p.vals[i] < p.vals[j] })
	idx := make(map[int64]int, len(p.vals))
	for i, v := range p.vals {
		idx[v] = i
	}
	for _, d := range ds {
		c := make([]int64, len(p.vals))
		for i, v := range d.vals {
			c[idx[v]] = d.counts[i]
		}
		p.counts = append(p.counts, c)
		p.totals = append(p.totals, d.total)
	}
	return p
}

// percentiles returns the value of every key of hist.Keys for the runs
// weighted by w (w[i] copies of run i), in one pass; ok is false when the
// weighted runs hold no samples.
func (p *pool) percentiles(w []int, out []int64) bool {
	var total int64
	for i, n := range w {
		total += int64(n) * p.totals[i]
	}
	if total == 0 {
		return false
	}
	ranks := make([]int64, len(hist.Keys))
	for k, key := range hist.Keys {
		if key == "max" {
			ranks[k] = total
		} else {
			ranks[k] = rankOf(quantileOf(key), total)
		}
	}
	var cum int64
	k := 0
	for j, v := range p.vals {
		var c int64
		for i, n := range w {
			if n != 0 {
				c += int64(n) * p.counts[i][j]
			}
		}
		if c == 0 {
			continue
		}
		cum += c
		for k < len(ranks) && cum >= ranks[k] {
			out[k] = v
			k++
		}
		if k == len(ranks) {
			break
		}
	}
	return true
}

// resample draws len(p.counts) runs with replacement.
func (p *pool) resample(rng *rand.Rand, w []int) {
	for i := range w {
		w[i] = 0
	}
	for range w {
		w[rng.IntN(len(w))]++
	}
}

// BootstrapRounds is the number of resamples of every bootstrap.
const BootstrapRounds = 1000

// MinBootstrapRuns is the fewest runs a bootstrap over runs is computed
// from: with fewer, resampling runs says nothing about run-to-run variation.
const MinBootstrapRuns = 3

// BootstrapCI returns, for every key of hist.Keys, the percentile-bootstrap
// confidence interval of the pooled percentile over runs: resample the runs
// with replacement, merge, read the percentile; the interval holds the
// central 95% of the resampled values. It captures run-to-run variation
// (drift, a noisy neighbour), which dominates on a shared machine. With few
// runs it is narrower than the truth (8 runs: about 85-90% coverage).
func BootstrapCI(hs []*hdrhistogram.Histogram, rounds int, seed uint64) map[string]Interval {
	if len(hs) < 1 {
		return nil
	}
	p := newPool(hs)
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	samples := make([][]int64, len(hist.Keys))
	w := make([]int, len(hs))
	out := make([]int64, len(hist.Keys))
	for range rounds {
		p.resample(rng, w)
		if !p.percentiles(w, out) {
			continue
		}
		for k := range out {
			samples[k] = append(samples[k], out[k])
		}
	}
	return intervals(samples)
}

// BootstrapDiffCI is the bootstrap interval of (pooled percentile of a) -
// (pooled percentile of b) for every key, resampling the runs of a and of b
// independently.
func BootstrapDiffCI(a, b []*hdrhistogram.Histogram, rounds int, seed uint64) map[string]Interval {
	if len(a) < 1 || len(b) < 1 {
		return nil
	}
	pa, pb := newPool(a), newPool(b)
	rng := rand.New(rand.NewPCG(seed, 0x2545f4914f6cdd1d))
	samples := make([][]int64, len(hist.Keys))
	wa, wb := make([]int, len(a)), make([]int, len(b))
	oa, ob := make([]int64, len(hist.Keys)), make([]int64, len(hist.Keys))
	for range rounds {
		pa.resample(rng, wa)
		pb.resample(rng, wb)
		if !pa.percentiles(wa, oa) || !pb.percentiles(wb, ob) {
			continue
		}
		for k := range oa {
			samples[k] = append(samples[k], oa[k]-ob[k])
		}
	}
	return intervals(samples)
}

// intervals takes the 2.5% and 97.5% points of each key's resampled values.
func intervals(samples [][]int64) map[string]Interval {
	out := map[string]Interval{}
	for k, s := range samples {
		if len(s) == 0 {
			continue
		}
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		lo := int(math.Floor((1 - Confidence) / 2 * float64(len(s))))
		hi := int(math.Ceil((1+Confidence)/2*float64(len(s)))) - 1
		if hi >= len(s) {
			hi = len(s) - 1
		}
		out[hist.Keys[k]] = Interval{Lo: s[lo], Hi: s[hi]}
	}
	return out
}

// Merge returns a new histogram holding every sample of hs.
func Merge(hs []*hdrhistogram.Histogram) *hdrhistogram.Histogram {
	m := hist.New()
	for _, h := range hs {
		m.Merge(h)
	}
	return m
}
