package clock

import (
	"testing"

	"golang.org/x/sys/unix"
)

// Now must read the kernel's CLOCK_MONOTONIC itself, not a clock with an
// offset (such as Go's process-relative monotonic reading).
func TestNowIsClockMonotonic(t *testing.T) {
	for i := 0; i < 5; i++ {
		var ts unix.Timespec
		before := Now()
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			t.Fatal(err)
		}
		after := Now()
		k := ts.Nano()
		if k < before || k > after {
			t.Fatalf("CLOCK_MONOTONIC %d outside [%d, %d]", k, before, after)
		}
	}
}

func BenchmarkNow(b *testing.B) {
	for i := 0; i < b.N; i++ {
		Now()
	}
}
