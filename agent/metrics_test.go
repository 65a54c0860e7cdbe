package agent

import (
	"math"
	"testing"
	"time"

	"github.com/hopscope/hopscope/hist"
)

func TestPromBuckets(t *testing.T) {
	h := hist.New()
	for i := 0; i < 100; i++ {
		hist.Record(h, int64(3*time.Microsecond))
	}
	for i := 0; i < 50; i++ {
		hist.Record(h, int64(time.Millisecond))
	}
	count, sum, b := promBuckets(h)
	if count != 150 {
		t.Errorf("count %d, want 150", count)
	}
	if want := 100*3e-6 + 50*1e-3; math.Abs(sum-want)/want > 0.001 {
		t.Errorf("sum %g s, want %g", sum, want)
	}
	for _, c := range []struct {
		le   float64
		want uint64
	}{
		{2e-6, 0}, {4e-6, 100}, {0.000512, 100}, {0.001024, 150}, {HopBuckets[len(HopBuckets)-1], 150},
	} {
		got, ok := b[c.le]
		if !ok {
			// the bounds are 1e-6 * 2^k: find the nearest one
			for _, ub := range HopBuckets {
				if math.Abs(ub-c.le)/c.le < 0.03 {
					got, ok = b[ub], true
				}
			}
		}
		if !ok || got != c.want {
			t.Errorf("bucket le=%g: %d (found %v), want %d", c.le, got, ok, c.want)
		}
	}
}

func TestSubtractWindow(t *testing.T) {
	before, after := hist.New(), hist.New()
	for i := 0; i < 10; i++ {
		hist.Record(before, int64(time.Millisecond))
		hist.Record(after, int64(time.Millisecond))
	}
	for i := 0; i < 5; i++ {
		hist.Record(after, int64(2*time.Millisecond))
	}
	d := subtract(after, before)
	if d.TotalCount() != 5 || d.Min() < int64(1990*time.Microsecond) {
		t.Errorf("after-before: %d samples, min %d", d.TotalCount(), d.Min())
	}
	// counts that went down (detached and attached again) do not go negative
	if d := subtract(before, after); d.TotalCount() != 0 {
		t.Errorf("before-after: %d samples, want 0", d.TotalCount())
	}
	if d := subtract(after, nil); d.TotalCount() != 15 {
		t.Errorf("after-nil: %d", d.TotalCount())
	}
}
