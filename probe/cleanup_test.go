package probe

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/hopscope/hopscope/target"
)

// childEnv makes the test binary a probe that attaches in clsact mode to
// the namespace it names, says "attached" and waits to be killed.
const childEnv = "HOPSCOPE_PROBE_TEST_CHILD"

// noRootEnv makes the test binary try Start and print its error.
const noRootEnv = "HOPSCOPE_PROBE_TEST_NOROOT"

// TestNotRoot: without privileges Start fails with one line naming the
// capabilities needed.
func TestNotRoot(t *testing.T) {
	needRoot(t) // to switch to an unprivileged user
	// the go tool's build directory is root's alone: copy the binary out
	dir, err := os.MkdirTemp("", "hsp-noroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "probe.test")
	raw, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), noRootEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	got := strings.TrimSpace(string(out))
	if got != ErrPrivileges.Error() {
		t.Fatalf("unprivileged Start: %q, want %q", got, ErrPrivileges)
	}
	for _, c := range []string{"CAP_BPF", "CAP_NET_ADMIN"} {
		if !strings.Contains(got, c) {
			t.Errorf("message %q does not name %s", got, c)
		}
	}
}

func TestMain(m *testing.M) {
	if os.Getenv(noRootEnv) != "" {
		_, err := Start(context.Background(), Config{})
		fmt.Println(err)
		os.Exit(0)
	}
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
