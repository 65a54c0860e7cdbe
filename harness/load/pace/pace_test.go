package pace

import (
	"sort"
	"testing"
	"time"

	"github.com/hopscope/hopscope/clock"
)

func TestSleepUntil(t *testing.T) {
	tm, err := NewTimer()
	if err != nil {
		t.Fatal(err)
	}
	defer tm.Close()
	var lags []int64
	for i := 0; i < 200; i++ {
		at := clock.Now() + int64(300*time.Microsecond)
		if err := tm.SleepUntil(at); err != nil {
			t.Fatal(err)
		}
		lag := clock.Now() - at
		if lag < 0 {
			t.Fatalf("woke %d ns early", -lag)
		}
		lags = append(lags, lag)
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	t.Logf("wake lag after 300µs sleeps: p50 %v p99 %v max %v",
		time.Duration(lags[len(lags)/2]), time.Duration(lags[len(lags)*99/100]), time.Duration(lags[len(lags)-1]))
	// time.Sleep of the same would sit in epoll_wait for a whole millisecond;
	// a median under half of that shows the timerfd is doing the waking.
	if lags[len(lags)/2] > int64(500*time.Microsecond) {
		t.Errorf("median wake lag %v: timerfd wakeups are not reaching the netpoller", time.Duration(lags[len(lags)/2]))
	}
	if err := tm.SleepUntil(clock.Now() - 1); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkSleepUntil100us(b *testing.B) {
	tm, err := NewTimer()
	if err != nil {
		b.Fatal(err)
	}
	defer tm.Close()
	var sum int64
	for i := 0; i < b.N; i++ {
		at := clock.Now() + int64(100*time.Microsecond)
		_ = tm.SleepUntil(at)
		sum += clock.Now() - at
	}
	b.ReportMetric(float64(sum)/float64(b.N), "lag-ns/op")
}
