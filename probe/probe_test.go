package probe

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/hopscope/hopscope/clock"
	"github.com/hopscope/hopscope/reqid"
	"github.com/hopscope/hopscope/target"
)

// hasTCX: TCX came with Linux 6.6 (the vmtest VM boots 6.1 and 6.12).
func hasTCX() bool {
	var u unix.Utsname
	var major, minor int
	if unix.Uname(&u) != nil {
		return false
	}
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	return major*1000+minor >= 6006
}

func modes(t *testing.T) []Mode {
	if !hasTCX() {
		return []Mode{Clsact}
	}
	return []Mode{TCX, Clsact}
}

func startProbe(t testing.TB, cfg Config) *Probe {
	t.Helper()
	cfg.Logf = t.Logf
	p, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start probe: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestAutoMode(t *testing.T) {
	needRoot(t)
	p := startProbe(t, Config{})
	want := TCX
	if !hasTCX() {
		want = Clsact
	}
	if p.Mode() != want {
		t.Fatalf("auto chose %s, want %s on this kernel", p.Mode(), want)
	}
}

// client records what a test client saw of each request.
type sent struct {
	id              uint64
	start, firstEnd int64
}

// drive sends n GETs with IDs to url from inside ns, paced at gap.
func drive(t *testing.T, ns, url string, n int, gap time.Duration) []sent {
	t.Helper()
	c := clientIn(ns)
	defer c.CloseIdleConnections()
	out := make([]sent, 0, n)
	for i := 0; i < n; i++ {
		id := uint64(0xabc000 + i)
		s := sent{id: id, start: clock.Now()}
		resp, err := c.Get(url + "/x?" + reqid.String(id))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		s.firstEnd = clock.Now()
		out = append(out, s)
		time.Sleep(gap)
	}
	return out
}

func serveHTTP(t *testing.T, ns, addr string, delay time.Duration) {
	ln := listenIn(t, ns, addr)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if delay > 0 {
			time.Sleep(delay)
		}
		w.Header().Set("Content-Length", "2")
		w.Write([]byte("ok"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

func checkTimelines(t *testing.T, r Result, reqs []sent, wantStages int) {
	t.Helper()
	byID := map[uint64]Timeline{}
	for _, tl := range r.Timelines {
		byID[tl.ID] = tl
	}
	for _, s := range reqs {
		tl, ok := byID[s.id]
		if !ok {
			t.Errorf("request %s: no timeline", reqid.String(s.id))
			continue
		}
		var first, last int64
		n := 0
		for _, at := range tl.At {
			if at == 0 {
				continue
			}
			n++
			if first == 0 || at < first {
				first = at
			}
			if at > last {
				last = at
			}
		}
		if n != wantStages {
			t.Errorf("request %s: %d stages seen, want %d: %v", reqid.String(s.id), n, wantStages, tl.At)
		}
		// the sum of hops is last-first; it must fit in the client's view
		if first < s.start || last > s.firstEnd {
			t.Errorf("request %s: hops [%d, %d] outside client's [%d, %d]", reqid.String(s.id), first, last, s.start, s.firstEnd)
		}
	}
}

func TestBaseline(t *testing.T) {
	needRoot(t)
	for _, m := range modes(t) {
		t.Run(string(m), func(t *testing.T) {
			c, s := newPair(t, "bc", "bs")
			serveHTTP(t, s.ns, "198.18.250.2:18080", 0)
			p := startProbe(t, Config{Mode: m, KeepTimelines: true})
			if p.Mode() != m {
				t.Fatalf("mode %s, want %s", p.Mode(), m)
			}
			must(t, p.Attach(target.Target{Name: "client", Role: target.Client, NetnsPath: c.ns, Device: c.dev}))
			must(t, p.Attach(target.Target{Name: "server", Role: target.Server, NetnsPath: s.ns, Device: s.dev, AppPort: 18080}))
			reqs := drive(t, c.ns, "http://198.18.250.2:18080", 100, time.Millisecond)
			r := p.Result()
			t.Logf("health %+v", r.Probe)
			for _, h := range []string{HopNetworkReq, HopApp, HopNetworkResp} {
				if r.Hops[h].Count != 100 {
					t.Errorf("hop %s: count %d, want 100 (hops %v)", h, r.Hops[h].Count, keys(r.Hops))
				}
			}
			if len(r.Hops) != 3 {
				t.Errorf("hops %v, want network/req, app, network/resp", keys(r.Hops))
			}
			if r.Probe.Drops != 0 || r.Probe.Events != r.Probe.Emitted {
				t.Errorf("drops %d, events %d of %d emitted", r.Probe.Drops, r.Probe.Events, r.Probe.Emitted)
			}
			checkTimelines(t, r, reqs, 4)
			ring := ringID(t, p)
			must(t, p.Close())
			if l := waitLeftovers(t, ring, map[string][]string{c.ns: {c.dev}, s.ns: {s.dev}}); len(l) > 0 {
				t.Errorf("left behind: %v", l)
			}
		})
	}
}

func TestMeshed(t *testing.T) {
	needRoot(t)
	for _, m := range modes(t) {
		t.Run(string(m), func(t *testing.T) {
			c, s := newPair(t, "mc", "ms")
			serveHTTP(t, s.ns, "127.0.0.1:18080", 0)                                      // app
			tcpProxy(t, listenIn(t, s.ns, "198.18.250.2:15006"), s.ns, "127.0.0.1:18080") // server sidecar
			tcpProxy(t, listenIn(t, c.ns, "127.0.0.1:15001"), c.ns, "198.18.250.2:15006") // client sidecar
			p := startProbe(t, Config{Mode: m, KeepTimelines: true})
			must(t, p.Attach(target.Target{Name: "client", Role: target.Client, NetnsPath: c.ns, Device: c.dev, Loopback: "lo", OutboundPort: 15001}))
			must(t, p.Attach(target.Target{Name: "server", Role: target.Server, NetnsPath: s.ns, Device: s.dev, Loopback: "lo", InboundPort: 15006, AppPort: 18080}))
			reqs := drive(t, c.ns, "http://127.0.0.1:15001", 100, time.Millisecond)
			r := p.Result()
			t.Logf("health %+v", r.Probe)
			for _, h := range HopNames {
				if r.Hops[h].Count != 100 {
					t.Errorf("hop %s: count %d, want 100", h, r.Hops[h].Count)
				}
				t.Logf("%-17s p50 %6d ns p99 %6d ns", h, r.Hops[h].P50, r.Hops[h].P99)
			}
			checkTimelines(t, r, reqs, 8)
			if len(r.Targets["client"]) == 0 || len(r.Targets["server"]) == 0 {
				t.Errorf("per-target breakdown missing: %v", r.Targets)
			}
			// live detach: the client's points go, the server's stay
			must(t, p.Detach("client"))
			p.Reset()
			drive(t, c.ns, "http://127.0.0.1:15001", 20, time.Millisecond)
			r = p.Result()
			if got := r.Hops[HopServerProxyIn].Count; got != 20 {
				t.Errorf("after detaching the client: server-proxy/in count %d, want 20", got)
			}
			if r.Hops[HopClientProxyOut].Count != 0 {
				t.Errorf("after detaching the client: client hops still counted")
			}
			ring := ringID(t, p)
			must(t, p.Close())
			if l := waitLeftovers(t, ring, map[string][]string{c.ns: {c.dev, "lo"}, s.ns: {s.dev, "lo"}}); len(l) > 0 {
				t.Errorf("left behind: %v", l)
			}
		})
	}
}

func waitLeftovers(t *testing.T, ring ebpf.MapID, where map[string][]string) []string {
	var l []string
	for i := 0; i < 50; i++ { // programs are freed after an RCU grace period
		l = leftovers(t, where)
		if n := loadedPrograms(t, ring); n > 0 {
			l = append(l, fmt.Sprintf("%d hopscope_tc program(s) still loaded", n))
		}
		if len(l) == 0 {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return l
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
