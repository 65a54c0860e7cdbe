package lab

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// cgroupExists reports whether rel exists in any hierarchy.
func cgroupExists(rel string) bool {
	hs, _ := hierarchies()
	for _, h := range hs {
		if _, err := os.Stat(filepath.Join(h, rel)); err == nil {
			return true
		}
	}
	return false
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, veths, cgroups): run as root")
	}
}

func newTestPod(t *testing.T, name, addr string) *Pod {
	t.Helper()
	DeletePod(name) // leftovers of a killed run
	p, err := NewPod(context.Background(), name, netip.MustParsePrefix(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p
}

func TestPodsTalkAcrossBridge(t *testing.T) {
	needRoot(t)
	a := newTestPod(t, "hsl-pt-a", "198.19.230.2/24")
	b := newTestPod(t, "hsl-pt-b", "198.19.230.3/24")
	if a.Bridge != b.Bridge {
		t.Fatalf("pods of one subnet on bridges %s and %s", a.Bridge, b.Bridge)
	}
	ln, err := b.Listen(b.IP().String() + ":8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from b")
	})}
	go srv.Serve(ln)
	defer srv.Close()

	c, err := a.Dial(context.Background(), b.IP().String()+":8080")
	if err != nil {
		t.Fatalf("dial b from a: %v", err)
	}
	defer c.Close()
	if la := c.LocalAddr().(*net.TCPAddr).IP.String(); la != a.IP().String() {
		t.Errorf("connection from %s, want pod a's %s", la, a.IP())
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
	c.SetDeadline(time.Now().Add(5 * time.Second))
	body, _ := io.ReadAll(c)
	if !strings.Contains(string(body), "hello from b") {
		t.Fatalf("response %q", body)
	}
	// The host reaches the pod through the bridge's address.
	hc, err := net.DialTimeout("tcp", b.IP().String()+":8080", 2*time.Second)
	if err != nil {
		t.Fatalf("dial pod from host: %v", err)
	}
	hc.Close()
}

func TestPodProcessInNetnsAndCgroup(t *testing.T) {
	needRoot(t)
	p := newTestPod(t, "hsl-pp", "198.19.231.2/24")
	dir := t.TempDir()
	pr, err := p.Start(context.Background(), "sleeper", []string{"sleep", "30"}, ProcOptions{
		Cgroup: "/hopscope-test-lab/hsl-pp/sleeper", Log: dir + "/log"})
	if err != nil {
		t.Fatal(err)
	}
	if got := pidsInNetns(p.NetnsPath); len(got) != 1 || got[0] != pr.PID {
		t.Errorf("processes in the pod's namespace: %v, want [%d]", got, pr.PID)
	}
	if got := cgroupPIDs(pr.Cgroup); len(got) != 1 || got[0] != pr.PID {
		t.Errorf("processes in cgroup %s: %v, want [%d]", pr.Cgroup, got, pr.PID)
	}
	if len(pr.CgroupDirs) < 1 {
		t.Errorf("no cgroup dirs")
	}
	if err := pr.Stop(); err != nil {
		t.Fatal(err)
	}
	if alive(pr.PID) {
		t.Errorf("process %d still alive after Stop", pr.PID)
	}
	if cgroupExists(pr.Cgroup) || cgroupExists("/hopscope-test-lab") {
		t.Errorf("cgroup left after Stop")
	}
}

func TestPodStartErrors(t *testing.T) {
	needRoot(t)
	p := newTestPod(t, "hsl-pe", "198.19.232.2/24")
	dir := t.TempDir()
	_, err := p.Start(context.Background(), "nope", []string{"/no/such/binary"}, ProcOptions{})
	if err == nil || !strings.Contains(err.Error(), "installed") {
		t.Errorf("missing binary: %v", err)
	}
	_, err = p.Start(context.Background(), "dies", []string{"sh", "-c", "echo boom-at-start; exit 3"}, ProcOptions{Log: dir + "/log", ReadyAddr: "127.0.0.1:9"})
	if err == nil || !strings.Contains(err.Error(), "boom-at-start") {
		t.Errorf("process that exits at start: %v", err)
	}
	if cgroupExists("/hopscope/hsl-pe") {
		t.Errorf("cgroup of a failed start left behind")
	}
}

func TestNewPodBadInput(t *testing.T) {
	for _, c := range []struct{ name, addr, want string }{
		{"", "198.18.0.2/24", "name"},
		{"a/b", "198.18.0.2/24", "name"},
		{"hsl-x", "10.0.0.2/24", "inside 198.18.0.0/15"},
		{"hsl-x", "198.18.0.0/24", "network"},
		{"hsl-x", "198.18.0.254/24", "gateway"},
		{"hsl-x", "198.18.0.2/31", "prefix length"},
	} {
		err := checkPodArgs(c.name, netip.MustParsePrefix(c.addr))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewPod(%q, %s): %v, want an error about %q", c.name, c.addr, err, c.want)
		}
	}
	needRoot(t)
	newTestPod(t, "hsl-dup", "198.19.233.2/24")
	if _, err := NewPod(context.Background(), "hsl-dup", netip.MustParsePrefix("198.19.233.3/24")); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second pod of one name: %v", err)
	}
}

func TestPodCloseRemovesEverything(t *testing.T) {
	needRoot(t)
	DeletePod("hsl-pc")
	p, err := NewPod(context.Background(), "hsl-pc", netip.MustParsePrefix("198.19.234.2/24"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Start(context.Background(), "s", []string{"sleep", "30"}, ProcOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.NetnsPath); err == nil {
		t.Errorf("namespace %s left", p.NetnsPath)
	}
	for _, n := range []string{p.HostPeer, p.Bridge} {
		if _, err := netlink.LinkByName(n); err == nil {
			t.Errorf("interface %s left", n)
		}
	}
	if cgroupExists("/hopscope/hsl-pc") {
		t.Errorf("cgroup left")
	}
}
