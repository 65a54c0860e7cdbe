package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/hopscope/hopscope/bpf"
	"github.com/hopscope/hopscope/harness/lab"
	"github.com/hopscope/hopscope/hist"
)

// BenchmarkClassifier: the probe's per-packet cost next to the minimal
// reserve+submit program, measured in alternating chunks of the same run so
// that the machine's noise hits both alike; reports both and their ratio.
func BenchmarkClassifier(b *testing.B) {
	needRoot(b)
	capture := 128 // HOPSCOPE_BENCH_CAPTURE: another capture size
	if v, err := strconv.Atoi(os.Getenv("HOPSCOPE_BENCH_CAPTURE")); err == nil {
		capture = v
	}
	p, prog := testProgram(b, Config{CaptureBytes: capture})
	ownPoint(p, 7)
	body := bytes.Repeat([]byte("x"), 200)
	req := append([]byte("GET /?hsid=00000000000000a1 HTTP/1.1\r\nHost: bench\r\n\r\n"), body...)

	var minObjs bpf.MinimalObjects
	if err := bpf.LoadMinimalObjects(&minObjs, nil); err != nil {
		b.Fatal(err)
	}
	defer minObjs.Close()
	minRd, err := ringbuf.NewReader(minObjs.MinEvents)
	if err != nil {
		b.Fatal(err)
	}
	defer minRd.Close()
	drainMin := func() {
		minRd.SetDeadline(time.Now())
		for {
			if _, err := minRd.Read(); err != nil {
				return
			}
		}
	}
	type bprog struct {
		name  string
		p     *ebpf.Program
		pkt   []byte
		drain func()
	}
	progs := []bprog{
		{"minimal", minObjs.MinimalTc, packet(false, 40000, 8080, 1, FlagACK, req), drainMin},
		{"capture128", prog, packet(false, 40000, 8080, 1, FlagACK, req), p.sync},
		{"unwatched", prog, packet(false, 40000, 9090, 1, FlagACK, req), func() {}},
		{"pure-ack", prog, packet(false, 40000, 8080, 1, FlagACK, nil), func() {}},
	}
	before, _ := p.Counters()
	const chunk = 5000
	total := make([]time.Duration, len(progs))
	runs := 0
	b.ResetTimer()
	for runs < b.N {
		n := min(chunk, b.N-runs)
		for i, pr := range progs {
			_, per, err := pr.p.Benchmark(pr.pkt, n, nil)
			if err != nil {
				b.Fatal(err)
			}
			total[i] += per * time.Duration(n)
			b.StopTimer()
			pr.drain()
			b.StartTimer()
		}
		runs += n
	}
	for i, pr := range progs {
		b.ReportMetric(float64(total[i].Nanoseconds())/float64(runs), pr.name+"-ns/pkt")
	}
	b.ReportMetric(float64(total[1])/float64(total[0]), "capture/minimal")
	after, _ := p.Counters()
	if after.Lost != before.Lost {
		b.Errorf("%d events lost during the benchmark: it measured the ring-full path", after.Lost-before.Lost)
	}
}

// BenchmarkFlood drives the classifier at fixed event rates for a second
// each and reports what was read and dropped at each.
func BenchmarkFlood(b *testing.B) {
	needRoot(b)
	p, prog := testProgram(b, Config{})
	ownPoint(p, 7)
	pkt := packet(false, 40000, 8080, 1, FlagACK|FlagPSH, []byte("GET /?hsid=00000000000000a1 HTTP/1.1\r\nHost: x\r\n\r\n"))
	for _, rate := range []int{200000, 400000, 800000, 1600000} {
		b.Run(fmt.Sprintf("rate-%dk", rate/1000), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				p.Reset()
				n := flood(b, prog, pkt, rate, time.Second)
				r := p.Result()
				b.ReportMetric(float64(n), "events")
				b.ReportMetric(float64(r.Probe.Events), "read")
				b.ReportMetric(float64(r.Probe.Drops), "drops")
				if r.Probe.Events+r.Probe.Drops != uint64(n) {
					b.Errorf("sent %d, read %d + dropped %d", n, r.Probe.Events, r.Probe.Drops)
				}
			}
		})
	}
}

// BenchmarkOverhead measures the client's latency at 2000 RPS through a
// meshed lab (reference proxies) with the probe detached and attached, in
// alternating windows of one run (HOPSCOPE_BENCH_WINDOW, default 10s;
// HOPSCOPE_BENCH_PAIRS, default 3), and reports pooled p50/p99 of both,
// their differences, and the median of the per-pair differences.
// HOPSCOPE_BENCH_DRAIN sets the reader's drain timer (Config.Drain).
func BenchmarkOverhead(b *testing.B) {
	needRoot(b)
	window := 10 * time.Second
	if v := os.Getenv("HOPSCOPE_BENCH_WINDOW"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			window = d
		}
	}
	var cfg Config
	if v := os.Getenv("HOPSCOPE_BENCH_DRAIN"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			cfg.Drain = d
		}
	}
	bin := hopscopeBinB(b)
	lab.StateDir = filepath.Join(os.TempDir(), "hsp-lab-state")
	name := "hsp-bench"
	_ = lab.Cleanup(name)
	ctx := context.Background()
	topo, proxy := lab.Mesh, lab.ProxySpec{Name: "reference"}
	if os.Getenv("HOPSCOPE_BENCH_TOPOLOGY") == "baseline" {
		topo, proxy = lab.Baseline, lab.ProxySpec{}
	}
	l, err := lab.Up(ctx, lab.Spec{Name: name, Topology: topo, Hopscope: bin,
		Proxy:  proxy,
		Subnet: netip.MustParsePrefix("198.19.251.0/24"), CgroupRoot: "/hopscope-test-probe"})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { l.Down(); lab.Cleanup(name) }()
	load := func() (*hdrhistogram.Histogram, error) {
		out := filepath.Join(b.TempDir(), "load.json")
		if _, err := l.RunInClient(ctx, []string{bin, "load", "-q", "--rate", "2000", "--duration", window.String(),
			"--warmup", "1s", "-c", "16", "--json", out, l.URL()}); err != nil {
			return nil, err
		}
		raw, err := os.ReadFile(out)
		if err != nil {
			return nil, err
		}
		var r struct {
			Latency hist.Encoded `json:"latency_hist"`
			Errors  int64        `json:"errors"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, err
		}
		if r.Errors > 0 {
			return nil, fmt.Errorf("%d load errors", r.Errors)
		}
		return r.Latency.H, nil
	}
	pairs := 3
	if v, err := strconv.Atoi(os.Getenv("HOPSCOPE_BENCH_PAIRS")); err == nil && v > 0 {
		pairs = v
	}
	for i := 0; i < b.N; i++ {
		off, on := hist.New(), hist.New()
		var drops, events uint64
		var readerCPU time.Duration // this process while attached: the reader
		var d50, d99 []float64      // per pair, attached minus detached
		for pair := 0; pair < pairs; pair++ {
			h, err := load()
			if err != nil {
				b.Fatal(err)
			}
			off.Merge(h)
			o50, o99 := h.ValueAtQuantile(50), h.ValueAtQuantile(99)
			p, err := Start(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			for _, tg := range l.Targets() {
				if err := p.Attach(tg); err != nil {
					b.Fatal(err)
				}
			}
			cpu0 := selfCPU()
			h, err = load()
			readerCPU += selfCPU() - cpu0
			r := p.Result()
			p.Close()
			if err != nil {
				b.Fatal(err)
			}
			on.Merge(h)
			d50 = append(d50, float64(h.ValueAtQuantile(50)-o50)/1e3)
			d99 = append(d99, float64(h.ValueAtQuantile(99)-o99)/1e3)
			drops += r.Probe.Drops
			events += r.Probe.Events
		}
		so, sa := hist.Summarize(off), hist.Summarize(on)
		b.ReportMetric(float64(so.P50)/1e3, "detached-p50-µs")
		b.ReportMetric(float64(sa.P50)/1e3, "attached-p50-µs")
		b.ReportMetric(float64(so.P99)/1e3, "detached-p99-µs")
		b.ReportMetric(float64(sa.P99)/1e3, "attached-p99-µs")
		b.ReportMetric(float64(sa.P50-so.P50)/1e3, "Δp50-µs")
		b.ReportMetric(float64(sa.P99-so.P99)/1e3, "Δp99-µs")
		b.ReportMetric(median(d50), "pair-median-Δp50-µs")
		b.ReportMetric(median(d99), "pair-median-Δp99-µs")
		b.Logf("per pair Δp50 µs %.1f, Δp99 µs %.1f", d50, d99)
		b.ReportMetric(float64(drops), "drops")
		b.ReportMetric(float64(events), "events")
		b.ReportMetric(100*readerCPU.Seconds()/(float64(pairs)*(window+time.Second).Seconds()), "reader-cpu-%")
		b.ReportMetric(float64(readerCPU.Nanoseconds())/float64(events), "reader-ns/event")
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// selfCPU is this process's user+system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCorrelator: userspace cost per event (decode excluded) for a
// keep-alive HTTP/1.1 exchange seen at a server pod's two points.
func BenchmarkCorrelator(b *testing.B) {
	c := newTestCorrelator()
	c.keep = false
	k := newConn(c, true)
	reqs := make([][]byte, 1024)
	for i := range reqs {
		reqs[i] = get(uint64(i + 1))
	}
	resp := ok("hello")
	b.ResetTimer()
	for i := 0; i < b.N; i += 2 {
		k.send(true, 0, reqs[(i/2)%len(reqs)])
		k.send(false, 0, resp)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
}
