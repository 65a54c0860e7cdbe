package load

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/hopscope/hopscope/harness/app"
	"github.com/hopscope/hopscope/hist"
	"github.com/hopscope/hopscope/reqid"
)

func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var b strings.Builder
	res.WriteText(&b)
	t.Logf("\n%s", b.String())
	return res
}

// A server paused for 1 s in the middle of a 200 RPS run: latency counted
// from the due time shows the pause in p99; with a fixed pool, only the few
// requests on the wire at the pause have a long service time, so the
// service-time p99 stays small. A closed-loop generator would have sent
// nothing during the pause and seen nothing.
func TestCoordinatedOmission(t *testing.T) {
	p := startApp(t, 0)
	pid := p.cmd.Process.Pid
	go func() {
		time.Sleep(3500 * time.Millisecond) // 0.5 s warm-up + 3 s
		syscall.Kill(pid, syscall.SIGSTOP)
		time.Sleep(time.Second)
		syscall.Kill(pid, syscall.SIGCONT)
	}()
	res := run(t, Config{URL: "http://" + p.HTTP + "/co", Rate: 200, Warmup: 500 * time.Millisecond,
		Duration: 8 * time.Second, Connections: 10, Timeout: 5 * time.Second})
	if res.Errors != 0 {
		t.Errorf("errors %d (%v)", res.Errors, res.ErrorsByClass)
	}
	if res.Latency.P99 < int64(500*time.Millisecond) {
		t.Errorf("latency p99 %v: the 1 s pause does not show", time.Duration(res.Latency.P99))
	}
	if res.Latency.Max < int64(900*time.Millisecond) {
		t.Errorf("latency max %v: the request due at the pause's start waited ~1 s", time.Duration(res.Latency.Max))
	}
	// 10 of 1600 requests were on the wire during the pause (0.6% < 1%).
	if res.ServiceTime.P99 > int64(100*time.Millisecond) {
		t.Errorf("service time p99 %v: want small (the pause is in latency, not service time)", time.Duration(res.ServiceTime.P99))
	}
	if res.Delayed < 150 || res.DelayMode != "delay" {
		t.Errorf("delayed %d, mode %q: ~190 requests should have waited for one of the 10 connections", res.Delayed, res.DelayMode)
	}
	if res.ServiceTime.Max < int64(900*time.Millisecond) {
		t.Errorf("service time max %v: the requests sent into the pause took ~1 s", time.Duration(res.ServiceTime.Max))
	}
}

// The achieved rate is within 1% of the target at 20, 200 and 2000 RPS;
// every request has its own ID, and the app saw exactly those IDs.
func TestRate(t *testing.T) {
	for _, rate := range []float64{20, 200, 2000} {
		t.Run(strings.TrimSuffix(strings.TrimSuffix(time.Duration(rate).String(), "ns"), "µs"), func(t *testing.T) {
			p := startApp(t, 0)
			var rec bytes.Buffer
			dur := 5 * time.Second
			res := run(t, Config{URL: "http://" + p.HTTP + "/rate", Rate: rate, Warmup: 200 * time.Millisecond,
				Duration: dur, Connections: 10, Records: &rec})
			if d := (res.AchievedRPS - rate) / rate; d > 0.01 || d < -0.01 {
				t.Errorf("achieved %.2f req/s for %v: off by %.2f%%", res.AchievedRPS, rate, 100*d)
			}
			want := int64(rate * dur.Seconds())
			if res.Requests != want || res.OK != want {
				t.Errorf("requests %d ok %d, want %d", res.Requests, res.OK, want)
			}
			recs, err := reqid.ReadRecords(&rec)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(recs)) != res.Requests {
				t.Fatalf("%d records for %d requests", len(recs), res.Requests)
			}
			ids := map[uint64]bool{}
			for i, r := range recs {
				if ids[r.ID] {
					t.Fatalf("id %x twice", r.ID)
				}
				ids[r.ID] = true
				if r.Status != 200 || !(r.Due <= r.Sent && r.Sent < r.FirstByte && r.FirstByte <= r.Done) {
					t.Fatalf("record %d: %+v", i, r)
				}
			}
			if !ids[res.FirstID] {
				t.Errorf("first_id %x is not among the records", res.FirstID)
			}
			seen := 0
			for _, s := range p.stamps(t) {
				if ids[s.ID] {
					seen++
				}
			}
			if seen != len(ids) {
				t.Errorf("app stamped %d of the %d measured IDs", seen, len(ids))
			}
		})
	}
}

// The .hlog reads back with hdrhistogram-go's own log reader to the counts
// of the result.
func TestHlogReadBack(t *testing.T) {
	h, _ := inProcessApp(t, app.Config{Listen: "127.0.0.1:0"})
	var hl bytes.Buffer
	res := run(t, Config{URL: "http://" + h + "/", Rate: 500, Duration: 2500 * time.Millisecond,
		Warmup: 300 * time.Millisecond, Connections: 4, Hlog: &hl})
	r := hdrhistogram.NewHistogramLogReader(bytes.NewReader(hl.Bytes()))
	var n, intervals int64
	sum := hist.New()
	for {
		ih, err := r.NextIntervalHistogram()
		if err != nil {
			t.Fatal(err)
		}
		if ih == nil {
			break
		}
		intervals++
		n += ih.TotalCount()
		sum.Merge(ih)
	}
	if n != res.Requests || n != res.LatencyHist.H.TotalCount() || n != 1250 {
		t.Errorf("hlog holds %d values, result %d requests, latency_hist %d; want 1250", n, res.Requests, res.LatencyHist.H.TotalCount())
	}
	if intervals < 3 || intervals > 4 {
		t.Errorf("%d intervals for a 2.5 s run, want 3 (one per second and the last partial)", intervals)
	}
	if sum.Max() != res.LatencyHist.H.Max() {
		t.Errorf("hlog max %d, result max %d", sum.Max(), res.LatencyHist.H.Max())
	}
}

// rawServer accepts connections and hands each to serve.
func rawServer(t *testing.T, serve func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); serve(c) }()
		}
	}()
	return ln.Addr().String()
}

// readRequests calls answer for every request head read from c.
func readRequests(c net.Conn, answer func(n int) bool) {
	br := bufio.NewReader(c)
	for n := 0; ; n++ {
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\r\n" {
				break
			}
		}
		if !answer(n) {
			return
		}
	}
}

// Errors during a run are counted by class.
func TestErrorClasses(t *testing.T) {
	tests := []struct {
		name  string
		serve func(net.Conn)
		class string
	}{
		{"status", func(c net.Conn) {
			readRequests(c, func(int) bool {
				io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
				return true
			})
		}, ClassStatus},
		{"timeout", func(c net.Conn) {
			readRequests(c, func(int) bool { return true }) // never answers
		}, ClassTimeout},
		{"protocol", func(c net.Conn) {
			readRequests(c, func(int) bool { io.WriteString(c, "HELLO\r\n\r\n"); return false })
		}, ClassProtocol},
		{"read", func(c net.Conn) {
			readRequests(c, func(int) bool { io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"); return false })
		}, ClassRead},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := rawServer(t, tc.serve)
			res := run(t, Config{URL: "http://" + addr + "/", Rate: 50, Duration: time.Second,
				Connections: 2, MaxConnections: 4, Timeout: 300 * time.Millisecond})
			if res.Requests != 50 {
				t.Errorf("requests %d, want 50 (every one answered, failed or timed out)", res.Requests)
			}
			if res.ErrorsByClass[tc.class] == 0 || res.Errors != res.Requests-res.OK {
				t.Errorf("errors %d by class %v, want class %s", res.Errors, res.ErrorsByClass, tc.class)
			}
			if tc.class == ClassTimeout && res.Timeouts != res.ErrorsByClass[ClassTimeout] {
				t.Errorf("timeouts %d, class timeout %d", res.Timeouts, res.ErrorsByClass[ClassTimeout])
			}
			if tc.class == ClassStatus && res.StatusCodes["503"] != 50 {
				t.Errorf("status codes %v, want 503: 50", res.StatusCodes)
			}
		})
	}
	t.Run("connect", func(t *testing.T) {
		// One connection; the server takes it, stops listening, and drops
		// it at the first request: later requests cannot connect.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := ln.Accept()
			ln.Close()
			if err == nil {
				readRequests(c, func(int) bool { return false })
				c.Close()
			}
		}()
		res := run(t, Config{URL: "http://" + ln.Addr().String() + "/", Rate: 50, Duration: time.Second,
			Connections: 1, Timeout: 300 * time.Millisecond})
		if res.ErrorsByClass[ClassConnect] < 40 || res.ErrorsByClass[ClassRead] != 1 || res.Requests != 50 {
			t.Errorf("requests %d, errors by class %v; want 1 read error, then connect errors", res.Requests, res.ErrorsByClass)
		}
	})
}

// gRPC end to end against the app: every call answered with its own ID, the
// app stamped each one.
func TestGRPC(t *testing.T) {
	p := startApp(t, 64)
	var rec bytes.Buffer
	res := run(t, Config{URL: "grpc://" + p.GRPC, Rate: 300, Duration: 2 * time.Second,
		Warmup: 200 * time.Millisecond, Connections: 4, Payload: 32, Records: &rec})
	if res.Requests != 600 || res.OK != 600 || res.StatusCodes["grpc-0"] != 600 {
		t.Errorf("requests %d ok %d codes %v; want 600 OK", res.Requests, res.OK, res.StatusCodes)
	}
	if d := (res.AchievedRPS - 300) / 300; d > 0.01 || d < -0.01 {
		t.Errorf("achieved %.1f req/s, want 300", res.AchievedRPS)
	}
	recs, err := reqid.ReadRecords(&rec)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[uint64]bool{}
	for _, r := range recs {
		ids[r.ID] = true
	}
	stamped := 0
	for _, s := range p.stamps(t) {
		if ids[s.ID] {
			stamped++
		}
	}
	if len(ids) != 600 || stamped != 600 {
		t.Errorf("%d distinct IDs, %d stamped by the app; want 600", len(ids), stamped)
	}
}

// When every connection is busy and the pool may grow, it grows instead of
// delaying.
func TestPoolGrows(t *testing.T) {
	h, _ := inProcessApp(t, app.Config{Listen: "127.0.0.1:0", Delay: mustDelay(t, "20ms")})
	res := run(t, Config{URL: "http://" + h + "/", Rate: 200, Duration: time.Second, Connections: 1, MaxConnections: 200})
	if res.ConnectionsGrown == 0 || res.Delayed != 0 || res.DelayMode != "grow" {
		t.Errorf("grown %d delayed %d mode %q: 200/s at 20 ms needs ~4 connections, up to 200 allowed", res.ConnectionsGrown, res.Delayed, res.DelayMode)
	}
	if res.Errors != 0 || res.Requests != 200 {
		t.Errorf("requests %d errors %d", res.Requests, res.Errors)
	}
	if res.Latency.P50 < int64(20*time.Millisecond) {
		t.Errorf("latency p50 %v below the app's 20 ms delay", time.Duration(res.Latency.P50))
	}
}

func mustDelay(t *testing.T, s string) app.Delay {
	d, err := app.ParseDelay(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Closed loop: every connection sends as soon as its last answer is in.
func TestClosedLoop(t *testing.T) {
	h, _ := inProcessApp(t, app.Config{Listen: "127.0.0.1:0"})
	res := run(t, Config{URL: "http://" + h + "/", ClosedLoop: true, Duration: time.Second, Connections: 4})
	if res.Requests < 1000 || res.Errors != 0 || res.SendLag.Count != 0 || res.RequestedRPS != 0 {
		t.Errorf("requests %d errors %d send lag count %d requested %v", res.Requests, res.Errors, res.SendLag.Count, res.RequestedRPS)
	}
}

// Cancelling the context stops the run at once with what was measured.
func TestInterrupt(t *testing.T) {
	h, _ := inProcessApp(t, app.Config{Listen: "127.0.0.1:0"})
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, Config{URL: "http://" + h + "/", Rate: 100, Duration: time.Minute, Connections: 2})
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("took %v to stop", el)
	}
	if !res.Interrupted || res.Requests < 100 || res.Requests > 125 || res.DurationNs > int64(1300*time.Millisecond) {
		t.Errorf("interrupted %v requests %d duration %v", res.Interrupted, res.Requests, time.Duration(res.DurationNs))
	}
}

// Bad input fails at once with a config error; a refused target with a
// connect error.
func TestBadInput(t *testing.T) {
	for _, cfg := range []Config{
		{URL: "http://127.0.0.1:1/", Rate: 0, Duration: time.Second, Connections: 1},
		{URL: "http://127.0.0.1:1/", Rate: -5, Duration: time.Second, Connections: 1},
		{URL: "127.0.0.1:80", Rate: 10, Duration: time.Second, Connections: 1},
		{URL: "ftp://127.0.0.1/", Rate: 10, Duration: time.Second, Connections: 1},
		{URL: "grpc://127.0.0.1", Rate: 10, Duration: time.Second, Connections: 1},
		{URL: "http://127.0.0.1:1/", Rate: 10, Duration: 0, Connections: 1},
		{URL: "http://127.0.0.1:1/", Rate: 10, Duration: time.Second, Connections: 0},
	} {
		if _, err := Run(context.Background(), cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: err %v, want a config error", cfg, err)
		}
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, u := range []string{"http://" + addr + "/", "grpc://" + addr} {
		start := time.Now()
		_, err := Run(context.Background(), Config{URL: u, Rate: 10, Duration: time.Second, Connections: 1, Timeout: 2 * time.Second})
		if err == nil || errors.Is(err, ErrConfig) || time.Since(start) > 2500*time.Millisecond {
			t.Errorf("%s: err %v after %v, want a connect error at once", u, err, time.Since(start))
		}
		t.Logf("%s: %v", u, err)
	}
}

// A rate whose period is not whole nanoseconds still sends round(R*D)
// requests in the window, warm-up excluded.
func TestRequestCount(t *testing.T) {
	h, _ := inProcessApp(t, app.Config{Listen: "127.0.0.1:0"})
	for _, tc := range []struct {
		rate         float64
		warmup, dur  time.Duration
		want, warmed int64
	}{
		{300, 100 * time.Millisecond, time.Second, 300, 30},
		{7, 0, time.Second, 7, 0},
		{333.3, 90 * time.Millisecond, 600 * time.Millisecond, 200, 30},
	} {
		var rec bytes.Buffer
		res := run(t, Config{URL: "http://" + h + "/", Rate: tc.rate, Warmup: tc.warmup, Duration: tc.dur, Connections: 2, Records: &rec})
		recs, err := reqid.ReadRecords(&rec)
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != tc.want || int64(len(recs)) != tc.want {
			t.Errorf("rate %v for %v: %d requests, %d records; want %d", tc.rate, tc.dur, res.Requests, len(recs), tc.want)
		}
		lowest := ^uint64(0)
		for _, r := range recs {
			lowest = min(lowest, r.ID)
		}
		if lowest != res.FirstID || res.FirstID&(1<<40-1) != uint64(tc.warmed) {
			t.Errorf("rate %v: lowest record id %x, first_id %x; want sequence number %d", tc.rate, lowest, res.FirstID, tc.warmed)
		}
	}
}
