package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/hopscope/hopscope/clock"
	"github.com/hopscope/hopscope/harness/load"
	"github.com/hopscope/hopscope/reqid"
	"github.com/hopscope/hopscope/target"
)

const testCgroupRoot = "/hopscope-test-lab"

// upLab brings a lab up for one test, removing leftovers of a killed run
// first, and checks after the test that nothing of it remains.
func upLab(t *testing.T, spec Spec) *Lab {
	t.Helper()
	needRoot(t)
	spec.Hopscope = hopscopeBin
	spec.CgroupRoot = testCgroupRoot
	if err := Cleanup(spec.Name); err != nil {
		t.Fatalf("cleanup before: %v", err)
	}
	l, err := Up(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var pids []int
		for _, p := range l.state().Procs {
			pids = append(pids, p.PID)
		}
		if err := l.Down(); err != nil {
			t.Errorf("down: %v", err)
		}
		assertGone(t, spec.Name, pids...)
	})
	return l
}

// assertGone checks that no namespace, veth, bridge, cgroup, nftables
// table, process or state of the lab called name remains.
func assertGone(t *testing.T, name string, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("lab process %d still runs", pid)
		}
	}
	for _, pod := range []string{"client", "server"} {
		n := name + "-" + pod
		if _, err := os.Stat(filepath.Join(NetnsDir, n)); err == nil {
			t.Errorf("namespace %s left", n)
		}
		if _, err := netlink.LinkByName(HostPeerName(n)); err == nil {
			t.Errorf("veth %s of %s left", HostPeerName(n), n)
		}
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if strings.Contains(l.Attrs().Alias, name+"-") || strings.HasPrefix(l.Attrs().Alias, bridgeAliasPrefix) && l.Attrs().Name == BridgeName(defaultSubnet(name)) {
			t.Errorf("interface %s (%s) left", l.Attrs().Name, l.Attrs().Alias)
		}
	}
	if cgs := labCgroups(name); len(cgs) > 0 {
		t.Errorf("cgroups left: %v", cgs)
	}
	if _, err := os.Stat(filepath.Join(StateDir, name)); err == nil {
		t.Errorf("state directory left")
	}
	if out, err := exec.Command("nft", "list", "tables").CombinedOutput(); err == nil && strings.Contains(string(out), "hopscope") {
		t.Errorf("nftables table left on the host: %s", out)
	}
	// Processes: anything in one of the lab's cgroups, or whose command
	// line names the lab's directory.
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(b), filepath.Join(StateDir, name)+"/") {
			t.Errorf("process %s left: %q", e.Name(), strings.ReplaceAll(string(b), "\x00", " "))
		}
		pid, _ := strconv.Atoi(e.Name())
		if cg, err := os.ReadFile("/proc/" + e.Name() + "/cgroup"); err == nil && strings.Contains(string(cg), "/"+name+"/") && alive(pid) {
			t.Errorf("process %s left in a cgroup of the lab: %s", e.Name(), cg)
		}
	}
}

// clientHTTP is an HTTP client whose connections start in the lab's client
// pod: the test process plays the load generator.
func clientHTTP(l *Lab) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return l.ClientPod().Dial(ctx, addr)
			},
			MaxIdleConnsPerHost: 1,
		},
	}
}

// medianLatency sends n requests one after another, paced every gap, and
// returns the median latency.
func medianLatency(t *testing.T, c *http.Client, url string, n int, gap time.Duration) time.Duration {
	t.Helper()
	var lat []int64
	for i := 0; i < n; i++ {
		start := clock.Now()
		resp, err := c.Get(url + "?" + reqid.String(uint64(i+1)))
		if err != nil {
			t.Fatalf("request %d to %s: %v", i, url, err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d to %s: %d %v", i, url, resp.StatusCode, err)
		}
		lat = append(lat, clock.Now()-start)
		time.Sleep(gap)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return time.Duration(lat[len(lat)/2])
}

func needProxy(t *testing.T, name string) {
	t.Helper()
	if pi := proxyInfo(name); !pi.Installed {
		if os.Getenv("CI") != "" {
			t.Fatalf("proxy %s not installed in CI (scripts/setup.sh installs it): %s", name, pi.Install)
		}
		t.Skipf("proxy %s not installed: %s", name, pi.Install)
	}
}

func TestBaselineAndMeshThroughEachProxy(t *testing.T) {
	const n, gap = 300, 2 * time.Millisecond
	var base time.Duration
	t.Run("baseline", func(t *testing.T) {
		l := upLab(t, Spec{Name: "hsl-base", Topology: Baseline})
		if !strings.HasPrefix(l.URL(), "http://"+l.ServerPod().IP().String()+":8080") {
			t.Errorf("baseline URL %s, want the app on the server pod", l.URL())
		}
		ts := l.Targets()
		if len(ts) != 2 || ts[0].Role != target.Client || ts[1].Role != target.Server || ts[1].AppPort != 8080 || ts[1].HasProxy() || ts[0].Loopback != "" {
			t.Errorf("baseline targets %+v", ts)
		}
		if ts[1].AppCgroup != testCgroupRoot+"/hsl-base/server-app" {
			t.Errorf("app cgroup %q", ts[1].AppCgroup)
		}
		base = medianLatency(t, clientHTTP(l), l.URL(), n, gap)
		t.Logf("baseline median %v", base)
	})
	if base == 0 {
		t.Fatal("no baseline")
	}
	for _, p := range []string{"reference", "haproxy", "nginx", "caddy"} {
		t.Run(p, func(t *testing.T) {
			needProxy(t, p)
			l := upLab(t, Spec{Name: "hsl-mesh-" + p, Topology: Mesh, Proxy: ProxySpec{Name: p}})
			if want := "http://127.0.0.1:15001/"; l.URL() != want {
				t.Errorf("mesh URL %s, want %s", l.URL(), want)
			}
			ts := l.Targets()
			if ts[0].OutboundPort != 15001 || ts[0].Loopback != "lo" || ts[0].ProxyPID == 0 || ts[0].ProxyCgroup == "" ||
				ts[1].InboundPort != 15006 || ts[1].AppPort != 8080 || ts[1].ProxyPID == 0 {
				t.Errorf("mesh targets %+v", ts)
			}
			// Only the sidecar is reachable from outside the server pod.
			if c, err := l.ClientPod().Dial(context.Background(), fmt.Sprintf("%s:8080", l.ServerPod().IP())); err == nil {
				c.Close()
				t.Errorf("the app is reachable from the client pod, bypassing the sidecar")
			}
			// The proxies run in their cgroups.
			for _, key := range []string{"client-proxy", "server-proxy"} {
				pr := l.Proc(key)
				if pids := cgroupPIDs(pr.Cgroup); len(pids) == 0 {
					t.Errorf("%s: no process in cgroup %s", key, pr.Cgroup)
				}
			}
			med := medianLatency(t, clientHTTP(l), l.URL(), n, gap)
			t.Logf("%s mesh median %v (baseline %v, added %v)", p, med, base, med-base)
			if med <= base {
				t.Errorf("%s: mesh median %v not above baseline %v", p, med, base)
			}
		})
	}
}

// loadInClient runs `hopscope load` in the client pod at a fixed rate and
// returns its result.
func loadInClient(t *testing.T, l *Lab, rate int, d time.Duration) load.Result {
	t.Helper()
	out := filepath.Join(l.Dir, fmt.Sprintf("load-%d.json", clock.Now()))
	_, err := l.RunInClient(context.Background(), []string{hopscopeBin, "load", "-q", "--rate", fmt.Sprint(rate),
		"--duration", d.String(), "--warmup", "500ms", "--connections", "4", "--json", out, l.URL()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r load.Result
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Errors > 0 || r.OK == 0 {
		t.Fatalf("load: %d ok, %d errors", r.OK, r.Errors)
	}
	return r
}

// TestServerProxyDelayShowsAtClient: the server-side reference proxy adding
// a fixed 2 ms raises the client-measured median by 2 ms ± 0.3 ms over the
// same proxy without delay. Runs alternate and the median of the per-pair
// differences is compared, so that drift on this shared machine cancels.
func TestServerProxyDelayShowsAtClient(t *testing.T) {
	needRoot(t)
	const delay = 2 * time.Millisecond
	labs := map[bool]*Lab{
		false: upLab(t, Spec{Name: "hsl-d0", Topology: Mesh, Proxy: ProxySpec{Name: "reference"}}),
		true:  upLab(t, Spec{Name: "hsl-d2", Topology: Mesh, Proxy: ProxySpec{Name: "reference", Delay: delay}}),
	}
	var diffs []time.Duration
	for i := 0; i < 5; i++ {
		r0 := loadInClient(t, labs[false], 200, 1500*time.Millisecond)
		r2 := loadInClient(t, labs[true], 200, 1500*time.Millisecond)
		d := time.Duration(r2.Latency.P50 - r0.Latency.P50)
		t.Logf("pair %d: median %v without delay, %v with %v: +%v", i, time.Duration(r0.Latency.P50), time.Duration(r2.Latency.P50), delay, d)
		diffs = append(diffs, d)
	}
	sort.Slice(diffs, func(i, j int) bool { return diffs[i] < diffs[j] })
	if got := diffs[len(diffs)/2]; got < delay-300*time.Microsecond || got > delay+300*time.Microsecond {
		t.Errorf("median rose by %v with a %v server-proxy delay, want %v ± 300µs (pairs: %v)", got, delay, delay, diffs)
	}
}

func TestInterception(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed (apt-get install nftables)")
	}
	l := upLab(t, Spec{Name: "hsl-icpt", Topology: Mesh, Proxy: ProxySpec{Name: "reference", Stamps: true}, Intercept: true})
	want := fmt.Sprintf("http://%s:8080/", l.ServerPod().IP())
	if l.URL() != want {
		t.Fatalf("URL %s, want the app's address %s", l.URL(), want)
	}
	medianLatency(t, clientHTTP(l), l.URL(), 20, time.Millisecond)
	l.Proc("client-proxy").Stop()
	l.Proc("server-proxy").Stop()
	for _, role := range []string{"client", "server"} {
		f, err := os.Open(l.ProxyStamps(role))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		lines := 0
		for sc.Scan() {
			lines++
		}
		f.Close()
		if lines != 21 {
			t.Errorf("%s sidecar stamped %d requests, want 20: the redirect did not send traffic through it", role, lines-1)
		}
	}
}

func TestUpBadInput(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	bin := hopscopeBin
	for _, c := range []struct {
		name string
		spec Spec
		want string
	}{
		{"bad name", Spec{Name: "Bad_Name"}, "lab name"},
		{"bad topology", Spec{Name: "hsl-bad", Topology: "star"}, "topology"},
		{"proxy in baseline", Spec{Name: "hsl-bad", Topology: Baseline, Proxy: ProxySpec{Name: "nginx"}}, "baseline"},
		{"no proxy in mesh", Spec{Name: "hsl-bad", Topology: Mesh}, "no proxy"},
		{"unknown proxy", Spec{Name: "hsl-bad", Topology: Mesh, Proxy: ProxySpec{Name: "envoy"}}, "not a built-in"},
		{"not installed", Spec{Name: "hsl-bad", Topology: Mesh, Proxy: ProxySpec{Name: "x", Command: "no-such-proxy-bin {{.Listen}}"}}, "not found"},
		{"template does not render", Spec{Name: "hsl-bad", Topology: Mesh, Proxy: ProxySpec{Name: "x", Command: "sh {{.Lissten}}"}}, "template"},
		{"template does not parse", Spec{Name: "hsl-bad", Topology: Mesh, Proxy: ProxySpec{Name: "x", Command: "sh {{.Listen"}}, "template"},
		{"same ports", Spec{Name: "hsl-bad", Ports: Ports{App: 15006}}, "different ports"},
		{"subnet outside", Spec{Name: "hsl-bad", Subnet: mustPrefix("10.1.0.0/24")}, "subnet"},
		{"delay on nginx", Spec{Name: "hsl-bad", Topology: Mesh, Proxy: ProxySpec{Name: "nginx", Delay: time.Millisecond}}, "reference proxy only"},
		{"no binary", Spec{Name: "hsl-bad", Hopscope: "/no/such/hopscope"}, "make build"},
		{"proxy exits at start", Spec{Name: "hsl-bad", Topology: Mesh, Proxy: ProxySpec{Name: "x", Command: "sh -c 'echo cannot-start-{{.Listen}} >&2; exit 1'"}}, "cannot-start-"},
		{"proxy daemonizes", Spec{Name: "hsl-bad", Topology: Mesh, Proxy: ProxySpec{Name: "x", Command: "sh -c '(sleep 30 &) ; exit 0' {{.Listen}}"}}, "foreground"},
		{"port in use", Spec{Name: "hsl-bad", Topology: Mesh, Proxy: ProxySpec{Name: "x", Command: bin + " proxy -q --listen {{.Upstream}} --upstream {{.Listen}}"}}, "address already in use"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.spec.CgroupRoot = testCgroupRoot
			if c.spec.Hopscope == "" {
				c.spec.Hopscope = bin
			}
			Cleanup(c.spec.Name)
			l, err := Up(ctx, c.spec)
			if err == nil {
				l.Down()
				t.Fatalf("Up succeeded, want an error about %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to mention %q", err, c.want)
			}
			t.Log(err)
			if strings.Count(err.Error(), "\n") > 0 {
				t.Errorf("error is not one line: %q", err)
			}
			assertGone(t, c.spec.Name)
		})
	}
}

func TestUpTwiceAndCleanupIdempotent(t *testing.T) {
	l := upLab(t, Spec{Name: "hsl-twice"})
	if _, err := Up(context.Background(), Spec{Name: "hsl-twice", Hopscope: hopscopeBin, CgroupRoot: testCgroupRoot}); err == nil || !strings.Contains(err.Error(), "already up") {
		t.Errorf("second Up: %v", err)
	}
	st, err := Status("hsl-twice")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Procs) != 1 || !st.Procs[0].Running || st.URL != l.URL() {
		t.Errorf("status %+v", st)
	}
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	if err := l.Down(); err != nil {
		t.Errorf("second Down: %v", err)
	}
	if err := Cleanup("hsl-twice"); err != nil {
		t.Errorf("Cleanup after Down: %v", err)
	}
	if _, err := Status("hsl-twice"); err == nil {
		t.Errorf("status of a lab that is down: no error")
	}
}

// TestCleanupAfterKill: a runner that brought a lab up is killed with
// SIGKILL; Cleanup then finds and removes everything by name.
func TestCleanupAfterKill(t *testing.T) {
	needRoot(t)
	const name = "hsl-crash"
	if os.Getenv("HSL_CRASH_CHILD") == "1" {
		// The runner: bring the lab up, say so, and wait to be killed.
		_, err := Up(context.Background(), Spec{Name: name, Topology: Mesh, Proxy: ProxySpec{Name: "reference"}, Hopscope: hopscopeBin, CgroupRoot: testCgroupRoot, Detach: true})
		if err != nil {
			fmt.Println("UP-FAILED", err)
			os.Exit(1)
		}
		fmt.Println("UP")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	Cleanup(name)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCleanupAfterKill$")
	cmd.Env = append(os.Environ(), "HSL_CRASH_CHILD=1", "HSL_BIN="+hopscopeBin)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	up := false
	for sc.Scan() {
		if sc.Text() == "UP" {
			up = true
			break
		}
		t.Log(sc.Text())
	}
	if !up {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("the runner did not bring the lab up")
	}
	cmd.Process.Kill()
	cmd.Wait()
	st, err := Status(name)
	if err != nil {
		t.Fatal(err)
	}
	running := 0
	for _, p := range st.Procs {
		if p.Running {
			running++
		}
	}
	if running != 3 {
		t.Errorf("%d of the killed runner's lab processes still run, want 3 (app and two sidecars, detached)", running)
	}
	if err := Cleanup(name); err != nil {
		t.Fatal(err)
	}
	assertGone(t, name)
	for _, p := range st.Procs {
		if alive(p.PID) {
			t.Errorf("process %s (%d) survived Cleanup", p.Name, p.PID)
		}
	}
	if err := Cleanup(name); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
}

func TestParseProxy(t *testing.T) {
	for _, c := range []struct {
		in, want string
	}{
		{"nginx", ""},
		{"reference", ""},
		{"envoy", "not a built-in"},
		{"my-proxy=myproxy --listen {{.Listen}} --to {{.Upstream}} --dir {{.ConfigDir}}", ""},
		{"nginx=foo", "built-in"},
		{"Bad Name=x", "proxy name"},
		{"x=", "empty"},
		{"x={{.Nope}}", "template"},
	} {
		p, err := ParseProxy(c.in)
		if c.want == "" && err != nil {
			t.Errorf("ParseProxy(%q): %v", c.in, err)
		}
		if c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("ParseProxy(%q): %v, want an error about %q", c.in, err, c.want)
		}
		if err == nil && p.Name == "" {
			t.Errorf("ParseProxy(%q): no name", c.in)
		}
	}
	argv, err := ProxySpec{Name: "x", Command: "myproxy -l {{.Listen}} -u {{.Upstream}} -d {{.ConfigDir}}"}.render(sidecarData{Listen: "127.0.0.1:1", Upstream: "198.18.0.3:2", ConfigDir: "/d"})
	if err != nil || strings.Join(argv, " ") != "sh -c exec myproxy -l 127.0.0.1:1 -u 198.18.0.3:2 -d /d" {
		t.Errorf("custom render: %q %v", argv, err)
	}
}

func TestProxies(t *testing.T) {
	ps := Proxies()
	names := map[string]ProxyInfo{}
	for _, p := range ps {
		names[p.Name] = p
		if !p.Installed && p.Install == "" {
			t.Errorf("%s: not installed and no install hint", p.Name)
		}
	}
	for _, n := range []string{"reference", "haproxy", "nginx", "caddy"} {
		if _, ok := names[n]; !ok {
			t.Errorf("built-in %s missing from Proxies()", n)
		}
	}
	if !names["reference"].Installed {
		t.Errorf("the reference proxy is always available")
	}
}

// TestGRPCMeshThroughEachProxy: the app's gRPC echo service through each
// built-in proxy (HTTP/2 cleartext on both hops), driven by the load
// generator in the client pod; every call must succeed.
func TestGRPCMeshThroughEachProxy(t *testing.T) {
	needRoot(t)
	for _, p := range []string{"reference", "haproxy", "nginx", "caddy"} {
		t.Run(p, func(t *testing.T) {
			needProxy(t, p)
			l := upLab(t, Spec{Name: "hsl-grpc-" + p, Topology: Mesh, Protocol: "grpc", Proxy: ProxySpec{Name: p}})
			if want := "grpc://127.0.0.1:15001"; l.URL() != want {
				t.Fatalf("URL %s, want %s", l.URL(), want)
			}
			r := loadInClient(t, l, 100, time.Second)
			if r.Protocol != "grpc" || r.StatusCodes["grpc-0"] != r.OK {
				t.Errorf("%s: protocol %s, status codes %v", p, r.Protocol, r.StatusCodes)
			}
			t.Logf("%s gRPC: %d ok, median %v", p, r.OK, time.Duration(r.Latency.P50))
		})
	}
}

// TestCleanupAllSparesPlainPods: cleaning up every lab removes labs found by
// their state directory or veth label, and leaves pods that NewPod made for
// other code alone, even when their names look like a lab's.
func TestCleanupAllSparesPlainPods(t *testing.T) {
	needRoot(t)
	plain := newTestPod(t, "hsl-plain-client", "198.19.229.2/24")
	Cleanup("hsl-all")
	if _, err := Up(context.Background(), Spec{Name: "hsl-all", Hopscope: hopscopeBin, CgroupRoot: testCgroupRoot, Detach: true}); err != nil {
		t.Fatal(err)
	}
	// Forget the state directory, as after a lost /run: the veth labels
	// must still find the lab.
	os.RemoveAll(filepath.Join(StateDir, "hsl-all"))
	// Only this package's labs: other packages' tests may run meanwhile.
	if err := cleanupAll(func(n string) bool { return strings.HasPrefix(n, "hsl-") }); err != nil {
		t.Fatal(err)
	}
	assertGone(t, "hsl-all")
	if _, err := os.Stat(plain.NetnsPath); err != nil {
		t.Errorf("a plain pod was removed by cleaning up all labs")
	}
}

// TestNotRoot: hopscope lab up as an unprivileged user stops at once with
// a message that says to use sudo, and makes nothing.
func TestNotRoot(t *testing.T) {
	needRoot(t)
	os.Chmod(filepath.Dir(hopscopeBin), 0o755)
	cmd := exec.Command(hopscopeBin, "lab", "up", "--name", "hsl-nonroot")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "sudo") {
		t.Errorf("lab up as nobody: %v, %q; want exit 1 and a message naming sudo", err, out)
	}
	assertGone(t, "hsl-nonroot")
}

// TestCheckPath: Up's last check, that the client pod reaches the server
// pod across the bridge, fails with the likely cause and fix when nothing
// answers (the kernel here cannot filter bridged traffic to simulate a host
// firewall, so an unreachable port stands in for it).
func TestCheckPath(t *testing.T) {
	needRoot(t)
	c := newTestPod(t, "hsl-cp-client", "198.19.228.2/24")
	s := newTestPod(t, "hsl-cp-server", "198.19.228.3/24")
	l := &Lab{Spec: Spec{Topology: Baseline, Ports: Ports{App: 8080}}, client: c, server: s}
	err := l.checkPath(context.Background())
	if err == nil || !strings.Contains(err.Error(), "cannot reach") || !strings.Contains(err.Error(), "firewall") {
		t.Errorf("nothing listening: %v", err)
	}
	ln, err := s.Listen(s.IP().String() + ":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := l.checkPath(context.Background()); err != nil {
		t.Errorf("server listening: %v", err)
	}
}
