package spawn

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN) to create namespaces and cgroups")
	}
}

func TestCommandJoinsNetnsAndCgroup(t *testing.T) {
	needRoot(t)
	const name = "hs-spawn-test"
	netns.DeleteNamed(name) // a leftover of an earlier killed run
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.NewNamed(name) // leaves this thread inside: go back
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close(); netns.DeleteNamed(name); orig.Close() })

	cg := cgroupDir(t)
	cmd, err := Command(context.Background(), Options{Netns: "/var/run/netns/" + name, Cgroups: []string{cg}},
		"sh", "-c", "readlink /proc/self/ns/net; cat /proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var st unix.Stat_t
	if err := unix.Stat("/var/run/netns/"+name, &st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "net:["+strconv.FormatUint(st.Ino, 10)+"]") {
		t.Errorf("child not in netns %d: %s", st.Ino, out)
	}
	if !strings.Contains(string(out), filepath.Base(cg)) {
		t.Errorf("child not in cgroup %s: %s", cg, out)
	}
}

func TestCommandReportsBadNetns(t *testing.T) {
	cmd, err := Command(context.Background(), Options{Netns: "/nonexistent/ns"}, "true")
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "open netns /nonexistent/ns") {
		t.Fatalf("want a clear failure, got %v: %s", err, out)
	}
}

// cgroupDir makes a cgroup v2 directory for the test, removed at the end.
func cgroupDir(t *testing.T) string {
	root := "/sys/fs/cgroup"
	if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.procs"); err == nil {
		root = "/sys/fs/cgroup/unified" // hybrid host
	}
	dir := filepath.Join(root, "hopscope-spawn-test")
	os.Remove(dir)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	return dir
}
