// Package hist holds hopscope's latency histograms: HdrHistograms in
// nanoseconds from 1 µs to 60 s at 3 significant digits, the percentile
// summary every result uses (p50, p75, p90, p99, p99.9, p99.99, max, mean),
// and interval logs in the HdrHistogram .hlog format that Java, C and Go
// readers share. It must not average percentiles: merge histograms instead.
package hist
