package probe

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/hopscope/hopscope/target"
)

// childEnv makes the test binary a probe that attaches in clsact mode to
// the namespace it names, says "attached" and waits to be killed.
const childEnv = "HOPSCOPE_PROBE_TEST_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		ns, dev, _ := strings.Cut(spec, ",")
		p, err := Start(context.Background(), Config{Mode: Clsact})
		if err == nil {
			err = p.Attach(target.Target{Name: "child", Role: target.Server, NetnsPath: ns, Device: dev, AppPort: 8080})
		}
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("attached")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestCleanupAfterKill: a probe killed with SIGKILL leaves its clsact
// filters; Cleanup removes them (and the qdisc it made), but not the
// filters of a probe that is still running.
func TestCleanupAfterKill(t *testing.T) {
	needRoot(t)
	a, b := newPair(t, "ka", "kb")
	where := map[string][]string{a.ns: {a.dev}}

	// a live probe's filters (on b) must survive every cleanup below
	live := startProbe(t, Config{Mode: Clsact})
	must(t, live.Attach(target.Target{Name: "live", Role: target.Server, NetnsPath: b.ns, Device: b.dev, AppPort: 8080}))

	killedChild(t, a)
	if l := leftovers(t, where); len(l) == 0 {
		t.Fatal("a killed clsact probe left nothing: the test proves nothing")
	}
	removed, err := Cleanup(CleanupOptions{Stale: true, Netns: []string{a.ns, b.ns}})
	if err != nil {
		t.Fatal(err)
	}
	if removed != 2 {
		t.Errorf("removed %d filters, want 2 (ingress and egress)", removed)
	}
	if l := leftovers(t, where); len(l) > 0 {
		t.Errorf("after cleanup: %v", l)
	}

	// every Start cleans up too
	killedChild(t, a)
	again := startProbe(t, Config{Mode: Clsact})
	again.Close()
	if l := leftovers(t, where); len(l) > 0 {
		t.Errorf("after a new Start: %v", l)
	}

	hb := mustHandle(t, b.ns)
	defer hb.Close()
	lb, _ := hb.LinkByName(b.dev)
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		if fs, _ := hb.FilterList(lb, parent); len(fs) != 1 {
			t.Errorf("live probe's filters under %x: %d, want 1", parent, len(fs))
		}
	}
}

// killedChild runs a clsact probe on p's device in a child process and
// kills it with SIGKILL once attached: no chance to detach.
func killedChild(t *testing.T, p pod) {
	t.Helper()
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"="+p.ns+","+p.dev)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	n, _ := out.Read(buf)
	child.Process.Kill()
	child.Wait()
	if !strings.Contains(string(buf[:n]), "attached") {
		t.Fatalf("child: %q", buf[:n])
	}
}
