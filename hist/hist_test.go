package hist

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestSummarizeKnownValues(t *testing.T) {
	h := New()
	for v := int64(1); v <= 1000; v++ {
		Record(h, v*int64(time.Microsecond))
	}
	s := Summarize(h)
	if s.Count != 1000 {
		t.Fatalf("count %d", s.Count)
	}
	checks := map[string]int64{"p50": 500_000, "p90": 900_000, "p99": 990_000, "max": 1_000_000}
	for k, want := range checks {
		got, _ := s.At(k)
		// 3 significant digits: within 0.1%
		if d := got - want; d < -want/1000 || d > want/1000 {
			t.Errorf("%s = %d, want %d ±0.1%%", k, got, want)
		}
	}
	if Summarize(New()).Count != 0 {
		t.Fatal("empty histogram must report count 0")
	}
}

func TestRecordClamps(t *testing.T) {
	h := New()
	if !Record(h, 10) || !Record(h, int64(2*time.Minute)) || Record(h, int64(time.Millisecond)) {
		t.Fatal("clamping reported wrongly")
	}
	if h.TotalCount() != 3 {
		t.Fatalf("clamped values must still be counted, got %d", h.TotalCount())
	}
}

func TestLogRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	start := time.Unix(1_700_000_000, 0)
	lw, err := NewLogWriter(&buf, start, "test")
	if err != nil {
		t.Fatal(err)
	}
	counts := []int64{3, 0, 250}
	for i, n := range counts {
		h := New()
		for j := int64(0); j < n; j++ {
			Record(h, (j+1)*int64(time.Millisecond))
		}
		from := start.Add(time.Duration(i) * time.Second)
		if err := lw.Interval(h, "hop", from, from.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadLog(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(counts) {
		t.Fatalf("read %d intervals, want %d", len(got), len(counts))
	}
	for i, h := range got {
		if h.TotalCount() != counts[i] || h.Tag() != "hop" {
			t.Errorf("interval %d: count %d tag %q", i, h.TotalCount(), h.Tag())
		}
	}
}

func TestEncodedJSON(t *testing.T) {
	h := New()
	Record(h, 1234567)
	b, err := json.Marshal(Encoded{h})
	if err != nil {
		t.Fatal(err)
	}
	var e Encoded
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	if e.H.TotalCount() != 1 || !e.H.ValuesAreEquivalent(e.H.Max(), 1234567) {
		t.Fatalf("round trip lost data: %d %d", e.H.TotalCount(), e.H.Max())
	}
}

func TestEncodedNilIsNull(t *testing.T) {
	b, err := json.Marshal(Encoded{})
	if err != nil || string(b) != "null" {
		t.Fatalf("nil histogram marshals to %s, %v; want null", b, err)
	}
	e := Encoded{H: New()}
	if err := json.Unmarshal([]byte("null"), &e); err != nil || e.H != nil {
		t.Fatalf("null unmarshals to %v, %v; want nil", e.H, err)
	}
}
