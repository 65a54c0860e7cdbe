package probe

import (
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/hopscope/hopscope/target"
)

// runExact runs prog repeat times in one BPF_PROG_TEST_RUN with signals
// blocked on the thread: a signal (the Go runtime's preemption SIGURG)
// interrupts a repeated run with EINTR after some repetitions, and the
// library retries the whole batch, so the count would no longer be exact.
func runExact(t testing.TB, prog *ebpf.Program, pkt []byte, repeat int) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var all, old unix.Sigset_t
	for i := range all.Val {
		all.Val[i] = ^uint64(0)
	}
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &all, &old); err != nil {
		t.Fatal(err)
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	if _, err := prog.Run(&ebpf.RunOptions{Data: pkt, Repeat: uint32(repeat)}); err != nil {
		t.Fatalf("test run: %v", err)
	}
}

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
		runExact(t, prog, pkt, due)
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
	rate := 200000 // the bar, for this 2-core machine
	if os.Getenv("HOPSCOPE_VM") == "1" {
		rate = 50000 // an emulated guest: the bar is the host's
	}
	n := flood(t, prog, pkt, rate, 2*time.Second)
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
	// no wake-ups and a slow timer: the ring fills while the program runs
	p, prog := testProgram(t, Config{RingBytes: 64 << 10, WakeupBytes: 1 << 30, Drain: 2 * time.Second})
	ownPoint(p, 7)
	pkt := packet(false, 40000, 8080, 1, FlagACK|FlagPSH, []byte("GET /?hsid=00000000000000a1 HTTP/1.1\r\n\r\n"))
	p.Reset()
	const n = 100000
	runExact(t, prog, pkt, n)
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
