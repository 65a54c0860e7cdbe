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

func TestTicker(t *testing.T) {
	const period = int64(500 * time.Microsecond)
	start := clock.Now() + period
	tk, err := NewTicker(start, period)
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	var lags []int64
	for i := int64(0); i < 400; i++ {
		at := start + i*period
		if err := tk.WaitUntil(at); err != nil {
			t.Fatal(err)
		}
		now := clock.Now()
		if now < at {
			t.Fatalf("tick %d: woke %d ns early", i, at-now)
		}
		lags = append(lags, now-at)
		if i == 200 { // fall behind by 3 ticks: the next waits return at once
			time.Sleep(time.Duration(3 * period))
		}
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	t.Logf("ticker wake lag at 2000/s: p50 %v p99 %v max %v",
		time.Duration(lags[len(lags)/2]), time.Duration(lags[len(lags)*99/100]), time.Duration(lags[len(lags)-1]))
	if lags[len(lags)/2] > int64(250*time.Microsecond) {
		t.Errorf("median wake lag %v: ticks are not waking the netpoller", time.Duration(lags[len(lags)/2]))
	}
	done := make(chan error, 1)
	go func() { done <- tk.WaitUntil(clock.Now() + int64(time.Hour)) }()
	time.Sleep(10 * time.Millisecond)
	tk.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Error("WaitUntil on a closed ticker returned nil")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not end WaitUntil")
	}
}
