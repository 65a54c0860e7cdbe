package hist

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// The range and precision of every hopscope histogram.
const (
	LowestNs  = int64(time.Microsecond)
	HighestNs = int64(60 * time.Second)
	SigFigs   = 3
)

// New returns an empty histogram in nanoseconds, 1 µs to 60 s, 3 digits.
func New() *hdrhistogram.Histogram {
	return hdrhistogram.New(LowestNs, HighestNs, SigFigs)
}

// Record adds v (ns), clamping it into the trackable range so that a value
// outside it is still counted: below 1 µs as 1 µs, above 60 s as 60 s.
// It reports whether v had to be clamped.
func Record(h *hdrhistogram.Histogram, v int64) (clamped bool) {
	switch {
	case v < LowestNs:
		v, clamped = LowestNs, true
	case v > HighestNs:
		v, clamped = HighestNs, true
	}
	_ = h.RecordValue(v) // cannot fail inside the range
	return clamped
}

// Quantiles are the percentiles hopscope reports, in order.
var Quantiles = []float64{50, 75, 90, 99, 99.9, 99.99}

// Summary is the percentile object of every result: nanoseconds, with the
// JSON keys the load generator, the probe and the bench runner share.
type Summary struct {
	Count  int64   `json:"count"`
	P50    int64   `json:"p50"`
	P75    int64   `json:"p75"`
	P90    int64   `json:"p90"`
	P99    int64   `json:"p99"`
	P999   int64   `json:"p99.9"`
	P9999  int64   `json:"p99.99"`
	Max    int64   `json:"max"`
	Mean   float64 `json:"mean"`
	StdDev float64 `json:"stddev"`
}

// Summarize reads the summary of h. An empty histogram gives all zeros and
// Count 0: callers must check Count before reading a zero as a latency.
func Summarize(h *hdrhistogram.Histogram) Summary {
	if h == nil || h.TotalCount() == 0 {
		return Summary{}
	}
	return Summary{
		Count:  h.TotalCount(),
		P50:    h.ValueAtQuantile(50),
		P75:    h.ValueAtQuantile(75),
		P90:    h.ValueAtQuantile(90),
		P99:    h.ValueAtQuantile(99),
		P999:   h.ValueAtQuantile(99.9),
		P9999:  h.ValueAtQuantile(99.99),
		Max:    h.Max(),
		Mean:   h.Mean(),
		StdDev: h.StdDev(),
	}
}

// At returns the value of the named percentile key ("p50" ... "max").
func (s Summary) At(key string) (int64, bool) {
	switch key {
	case "p50":
		return s.P50, true
	case "p75":
		return s.P75, true
	case "p90":
		return s.P90, true
	case "p99":
		return s.P99, true
	case "p99.9":
		return s.P999, true
	case "p99.99":
		return s.P9999, true
	case "max":
		return s.Max, true
	}
	return 0, false
}

// Keys are the percentile keys of a Summary, in report order.
var Keys = []string{"p50", "p75", "p90", "p99", "p99.9", "p99.99", "max"}

// Encode returns h in the compressed base64 form used in .hlog lines and by
// the agent's API.
func Encode(h *hdrhistogram.Histogram) (string, error) {
	b, err := h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return "", fmt.Errorf("encode histogram: %w", err)
	}
	return string(b), nil
}

// Decode is the inverse of Encode.
func Decode(s string) (*hdrhistogram.Histogram, error) {
	h, err := hdrhistogram.Decode([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("decode histogram: %w", err)
	}
	return h, nil
}

// Encoded is a histogram that marshals to JSON as its base64 encoding.
type Encoded struct{ H *hdrhistogram.Histogram }

// A nil histogram (nothing was measured) marshals as null, and null
// unmarshals to a nil histogram.
func (e Encoded) MarshalJSON() ([]byte, error) {
	if e.H == nil {
		return []byte("null"), nil
	}
	s, err := Encode(e.H)
	if err != nil {
		return nil, err
	}
	return json.Marshal(s)
}

func (e *Encoded) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		e.H = nil
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	h, err := Decode(s)
	if err != nil {
		return err
	}
	e.H = h
	return nil
}

// LogWriter writes interval histograms as an HdrHistogram log (.hlog).
type LogWriter struct {
	w *hdrhistogram.HistogramLogWriter
}

// NewLogWriter writes the log header: format version, start time, legend.
// start is the wall-clock time of the first interval's start.
func NewLogWriter(w io.Writer, start time.Time, comment string) (*LogWriter, error) {
	lw := hdrhistogram.NewHistogramLogWriter(w)
	ms := start.UnixMilli()
	lw.SetBaseTime(ms)
	steps := []func() error{
		func() error { return lw.OutputComment(comment) },
		lw.OutputLogFormatVersion,
		func() error { return lw.OutputStartTime(ms) },
		func() error { return lw.OutputBaseTime(ms) },
		lw.OutputLegend,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, fmt.Errorf("write hlog header: %w", err)
		}
	}
	return &LogWriter{w: lw}, nil
}

// Interval writes h as the interval [from, to) under tag (empty: untagged).
func (l *LogWriter) Interval(h *hdrhistogram.Histogram, tag string, from, to time.Time) error {
	h.SetTag(tag)
	h.SetStartTimeMs(from.UnixMilli())
	h.SetEndTimeMs(to.UnixMilli())
	if err := l.w.OutputIntervalHistogram(h); err != nil {
		return fmt.Errorf("write hlog interval: %w", err)
	}
	return nil
}

// ReadLog reads every interval histogram of an .hlog, in order.
func ReadLog(r io.Reader) ([]*hdrhistogram.Histogram, error) {
	lr := hdrhistogram.NewHistogramLogReader(r)
	var out []*hdrhistogram.Histogram
	for {
		h, err := lr.NextIntervalHistogram()
		if err != nil {
			return out, fmt.Errorf("read hlog: %w", err)
		}
		if h == nil {
			return out, nil
		}
		out = append(out, h)
	}
}
