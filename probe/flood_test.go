package probe

import (
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/hopscope/hopscope/target"
)

// flood runs pkt through prog at rate events/s for d, in batches of
// BPF_PROG_TEST_RUN repeats, and returns how many it ran.
func flood(t testing.TB, prog *ebpf.Program, pkt []byte, rate int, d time.Duration) int {
	start := time.Now()
	sent := 0
	for {
		el := time.Since(start)
		if el >= d {
			return sent
		}
		due := int(float64(rate)*el.Seconds()) - sent
		if due <= 0 {
			time.Sleep(200 * time.Microsecond)
			continue
		}
		if due > 5000 {
			due = 5000
		}
		if _, err := prog.Run(&ebpf.RunOptions{Data: pkt, Repeat: uint32(due)}); err != nil {
			t.Fatalf("test run: %v", err)
		}
		sent += due
	}
}

func ownPoint(p *Probe, point uint32) {
	p.mu.Lock()
	p.corr.addOwner(point, pointOwner{target: "flood", role: target.Server, kind: DevIngress, app: 8080})
	p.mu.Unlock()
}

// TestFloodSustained: 200,000 events/s for 2 s with no drops, every event
// read (the bar for this 2-core machine).
func TestFloodSustained(t *testing.T) {
	p, prog := testProgram(t, Config{})
	ownPoint(p, 7)
	pkt := packet(false, 40000, 8080, 1, FlagACK|FlagPSH, []byte("GET /?hsid=00000000000000a1 HTTP/1.1\r\nHost: x\r\n\r\n"))
	p.Reset()
	n := flood(t, prog, pkt, 200000, 2*time.Second)
	r := p.Result()
	t.Logf("ran %d packets: %+v", n, r.Probe)
	if r.Probe.Matched != uint64(n) || r.Probe.Emitted != uint64(n) || r.Probe.Events != uint64(n) || r.Probe.Drops != 0 {
		t.Errorf("ran %d: matched %d, emitted %d, read %d, dropped %d; want all read, none dropped",
			n, r.Probe.Matched, r.Probe.Emitted, r.Probe.Events, r.Probe.Drops)
	}
}

// TestFloodOverflow: far beyond what a small ring holds between drains, the
// drop counter accounts for every missing event exactly.
func TestFloodOverflow(t *testing.T) {
	p, prog := testProgram(t, Config{RingBytes: 64 << 10})
	ownPoint(p, 7)
	pkt := packet(false, 40000, 8080, 1, FlagACK|FlagPSH, []byte("GET /?hsid=00000000000000a1 HTTP/1.1\r\n\r\n"))
	p.Reset()
	const n = 100000
	if _, err := prog.Run(&ebpf.RunOptions{Data: pkt, Repeat: n}); err != nil {
		t.Fatal(err)
	}
	r := p.Result()
	t.Logf("%+v", r.Probe)
	if r.Probe.Drops == 0 {
		t.Fatalf("no drops from %d events into a 64 KiB ring: the test does not overflow", n)
	}
	if r.Probe.Events+r.Probe.Drops != n || r.Probe.Emitted != r.Probe.Events || r.Probe.Matched != n {
		t.Errorf("sent %d: read %d + dropped %d = %d (emitted %d, matched %d)",
			n, r.Probe.Events, r.Probe.Drops, r.Probe.Events+r.Probe.Drops, r.Probe.Emitted, r.Probe.Matched)
	}
}
