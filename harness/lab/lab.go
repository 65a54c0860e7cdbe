package lab

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hopscope/hopscope/target"
)

// DefaultName is the lab's name when none is given.
const DefaultName = "hopscope-lab"

// StateDir holds one directory per lab: its state file, proxy configs and
// logs. It is on tmpfs: a reboot removes it together with everything it
// describes.
var StateDir = "/run/hopscope/lab"

// Topologies.
const (
	Baseline = "baseline" // client pod -> app in the server pod
	Mesh     = "mesh"     // client -> client sidecar -> server sidecar -> app
)

// Ports a lab uses inside its pods.
type Ports struct {
	App      uint16 `json:"app"`      // the app (default 8080)
	Inbound  uint16 `json:"inbound"`  // server sidecar, on the server pod's address (default 15006)
	Outbound uint16 `json:"outbound"` // client sidecar, on 127.0.0.1 in the client pod (default 15001)
}

// Spec is what Up builds.
type Spec struct {
	Name     string `json:"name"`     // default DefaultName; objects are named after it
	Topology string `json:"topology"` // Baseline or Mesh
	// Protocol is "http" (HTTP/1.1, the default) or "grpc" (the app's gRPC
	// echo service over h2c; every built-in proxy forwards HTTP/2).
	Protocol string    `json:"protocol"`
	Proxy    ProxySpec `json:"proxy"` // Mesh only
	// Hopscope is the hopscope binary that runs the app and the reference
	// proxy in the pods; default os.Executable().
	Hopscope string   `json:"hopscope"`
	AppArgs  []string `json:"app_args,omitempty"` // added to `hopscope app --listen ...`
	Ports    Ports    `json:"ports"`
	// Subnet is the pods' /24 (or other) inside 198.18.0.0/15: client .2,
	// server .3, bridge the last host. Default: chosen from the name.
	Subnet netip.Prefix `json:"subnet"`
	// CgroupRoot is the cgroup every lab process goes under, as
	// <CgroupRoot>/<Name>/<pod>-<proc>; default "/hopscope".
	CgroupRoot string `json:"cgroup_root"`
	// Intercept redirects, with nftables in the pods as mesh init containers
	// do, the client's traffic to <server>:<App> into the client sidecar and
	// the server pod's inbound <App> traffic into the server sidecar; the
	// load generator then targets the app's address (URL) unchanged.
	// Needs the nft command (host only).
	Intercept bool `json:"intercept,omitempty"`
	// Detach lets the lab's processes outlive this process (hopscope lab
	// up); Down or Cleanup removes them.
	Detach bool `json:"detach,omitempty"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)

// withDefaults fills defaults and checks spec; the error says what to fix.
func (s Spec) withDefaults() (Spec, error) {
	if s.Name == "" {
		s.Name = DefaultName
	}
	if !nameRE.MatchString(s.Name) {
		return s, fmt.Errorf("lab name %q: want lowercase letters, digits and '-', up to 40, starting with a letter or digit", s.Name)
	}
	switch s.Topology {
	case "":
		s.Topology = Baseline
		if s.Proxy.Name != "" {
			s.Topology = Mesh
		}
	case Baseline, Mesh:
	default:
		return s, fmt.Errorf("topology %q: want baseline or mesh", s.Topology)
	}
	switch s.Protocol {
	case "":
		s.Protocol = "http"
	case "http", "grpc":
	default:
		return s, fmt.Errorf("protocol %q: want http or grpc", s.Protocol)
	}
	if s.Topology == Baseline && s.Proxy.Name != "" {
		return s, fmt.Errorf("proxy %s given for the baseline topology: use --topology mesh, or drop --proxy", s.Proxy.Name)
	}
	if s.Hopscope == "" {
		exe, err := os.Executable()
		if err != nil {
			return s, fmt.Errorf("find the hopscope binary: %w", err)
		}
		s.Hopscope = exe
	}
	if fi, err := os.Stat(s.Hopscope); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return s, fmt.Errorf("hopscope binary %q is not an executable file: build it (make build)", s.Hopscope)
	}
	if s.Topology == Mesh {
		if err := s.Proxy.check(s.Hopscope); err != nil {
			return s, err
		}
	}
	if s.Ports.App == 0 {
		s.Ports.App = 8080
	}
	if s.Ports.Inbound == 0 {
		s.Ports.Inbound = 15006
	}
	if s.Ports.Outbound == 0 {
		s.Ports.Outbound = 15001
	}
	if p := s.Ports; p.App == p.Inbound || p.App == p.Outbound || p.Inbound == p.Outbound {
		return s, fmt.Errorf("ports app %d, inbound %d, outbound %d: want three different ports", p.App, p.Inbound, p.Outbound)
	}
	if !s.Subnet.IsValid() {
		s.Subnet = defaultSubnet(s.Name)
	}
	s.Subnet = s.Subnet.Masked()
	if !Range.Contains(s.Subnet.Addr()) || s.Subnet.Bits() < Range.Bits() || s.Subnet.Bits() > 29 {
		return s, fmt.Errorf("subnet %v: want a prefix inside %v from /15 to /29", s.Subnet, Range)
	}
	if s.CgroupRoot == "" {
		s.CgroupRoot = "/hopscope"
	}
	s.CgroupRoot = "/" + strings.Trim(s.CgroupRoot, "/")
	if !strings.HasPrefix(s.CgroupRoot, "/hopscope") || strings.Count(s.CgroupRoot, "/") != 1 {
		return s, fmt.Errorf("cgroup root %q: want one level named hopscope... (/hopscope, /hopscope-test-x), so cleanup finds it", s.CgroupRoot)
	}
	if s.Intercept && s.Topology != Mesh {
		return s, errors.New("interception needs the mesh topology: add --topology mesh and a --proxy")
	}
	return s, nil
}

// defaultSubnet picks one of the 512 /24s of 198.18.0.0/15 from the name,
// so that labs of different names rarely share a bridge.
func defaultSubnet(name string) netip.Prefix {
	h, _ := strconv.ParseUint(shortHash(name), 16, 32)
	a := Range.Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) + uint32(h%512)<<8
	binary.BigEndian.PutUint32(a[:], v)
	return netip.PrefixFrom(netip.AddrFrom4(a), 24)
}

func hostAt(p netip.Prefix, n uint32) netip.Addr {
	a := p.Masked().Addr().As4()
	binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(a[:])+n)
	return netip.AddrFrom4(a)
}

// Lab is a running topology.
type Lab struct {
	Spec   Spec
	Dir    string // state, configs and logs
	client *Pod
	server *Pod
	procs  map[string]*Proc // "client-proxy", "server-proxy", "server-app"
}

// State is what a lab's state file records (hopscope lab status).
type State struct {
	Spec    Spec            `json:"spec"`
	Dir     string          `json:"dir"`
	URL     string          `json:"url"`
	Pods    []PodState      `json:"pods"`
	Procs   []ProcState     `json:"procs"`
	Targets []target.Target `json:"targets"`
	Created time.Time       `json:"created"`
}

// PodState is one pod in a State.
type PodState struct {
	Name     string `json:"name"`
	Netns    string `json:"netns"`
	Addr     string `json:"addr"`
	HostPeer string `json:"host_peer"`
	Bridge   string `json:"bridge"`
}

// ProcState is one process in a State.
type ProcState struct {
	Name    string   `json:"name"`
	PID     int      `json:"pid"`
	Cgroup  string   `json:"cgroup"`
	Log     string   `json:"log,omitempty"`
	Argv    []string `json:"argv"`
	Running bool     `json:"running"`
}

// Up builds the lab spec describes and starts its processes. On error
// nothing of it is left.
func Up(ctx context.Context, spec Spec) (l *Lab, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces, veths, cgroups): run with sudo")
	}
	spec, err = spec.withDefaults()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(StateDir, spec.Name)
	if _, err := os.Stat(dir); err == nil {
		return nil, fmt.Errorf("lab %s is already up (or was not cleaned up): hopscope lab down --name %s", spec.Name, spec.Name)
	}
	for _, pod := range []string{"client", "server"} {
		if _, err := os.Stat(filepath.Join(NetnsDir, spec.Name+"-"+pod)); err == nil {
			return nil, fmt.Errorf("lab %s: namespace %s-%s exists: hopscope lab down --name %s", spec.Name, spec.Name, pod, spec.Name)
		}
	}
	if err := subnetFree(spec.Subnet); err != nil {
		return nil, fmt.Errorf("lab %s: %w", spec.Name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("lab %s: state directory: %w", spec.Name, err)
	}
	l = &Lab{Spec: spec, Dir: dir, procs: map[string]*Proc{}}
	defer func() {
		if err != nil {
			l.Down()
			l = nil
		}
	}()
	// Written first, so that Cleanup finds the lab whatever happens next.
	if err := l.writeState(); err != nil {
		return l, err
	}
	if l.server, err = NewPod(ctx, spec.Name+"-server", netip.PrefixFrom(hostAt(spec.Subnet, 3), spec.Subnet.Bits())); err != nil {
		return l, err
	}
	if l.client, err = NewPod(ctx, spec.Name+"-client", netip.PrefixFrom(hostAt(spec.Subnet, 2), spec.Subnet.Bits())); err != nil {
		return l, err
	}
	// Relabel the pods' veths as a lab's, so Cleanup(All) tells them from
	// pods that other code made with NewPod.
	for _, p := range []*Pod{l.server, l.client} {
		if err := relabel(p.HostPeer, labPodAliasPrefix+p.Name); err != nil {
			return l, err
		}
	}
	appListen := fmt.Sprintf("%s:%d", l.server.IP(), spec.Ports.App)
	if spec.Topology == Mesh {
		appListen = fmt.Sprintf("127.0.0.1:%d", spec.Ports.App)
	}
	listenFlag := "--listen"
	if spec.Protocol == "grpc" {
		listenFlag = "--grpc-listen"
	}
	argv := append([]string{spec.Hopscope, "app", "-q", listenFlag, appListen}, spec.AppArgs...)
	if err := l.start(ctx, l.server, "app", argv, appListen, nil); err != nil {
		return l, err
	}
	if spec.Topology == Mesh {
		if err := l.startSidecar(ctx, l.server, "server",
			fmt.Sprintf("%s:%d", l.server.IP(), spec.Ports.Inbound), appListen); err != nil {
			return l, err
		}
		if err := l.startSidecar(ctx, l.client, "client",
			fmt.Sprintf("127.0.0.1:%d", spec.Ports.Outbound), fmt.Sprintf("%s:%d", l.server.IP(), spec.Ports.Inbound)); err != nil {
			return l, err
		}
		if spec.Intercept {
			if err := l.intercept(ctx); err != nil {
				return l, err
			}
		}
	}
	if err := l.checkPath(ctx); err != nil {
		return l, err
	}
	return l, l.writeState()
}

// checkPath connects from the client pod to what it must reach in the
// server pod, across the bridge.
func (l *Lab) checkPath(ctx context.Context) error {
	port := l.Spec.Ports.App
	if l.Spec.Topology == Mesh {
		port = l.Spec.Ports.Inbound
	}
	addr := fmt.Sprintf("%s:%d", l.server.IP(), port)
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := l.client.Dial(dctx, addr)
	if err != nil {
		return fmt.Errorf("the client pod cannot reach the server pod at %s (%v): a host firewall may drop bridged traffic (br_netfilter with an iptables FORWARD policy of DROP, as Docker sets): sysctl -w net.bridge.bridge-nf-call-iptables=0, or accept traffic on bridge %s", addr, err, l.server.Bridge)
	}
	return c.Close()
}

// subnetFree fails if another lab's pods use the subnet's bridge.
func subnetFree(p netip.Prefix) error {
	pods, err := podsOnBridge(BridgeName(p))
	if err != nil || len(pods) == 0 {
		return nil
	}
	return fmt.Errorf("subnet %v is in use by pods %s: give another subnet (--subnet 198.19.N.0/24) or take those down", p, strings.Join(pods, ", "))
}

func (l *Lab) start(ctx context.Context, pod *Pod, proc string, argv []string, ready string, env []string) error {
	role := strings.TrimPrefix(pod.Name, l.Spec.Name+"-")
	key := role + "-" + proc
	pr, err := pod.Start(ctx, proc, argv, ProcOptions{
		Cgroup:    l.Spec.CgroupRoot + "/" + l.Spec.Name + "/" + key,
		Log:       filepath.Join(l.Dir, key+".log"),
		ReadyAddr: ready,
		Env:       env,
		Detach:    l.Spec.Detach,
		Dir:       l.Dir,
	})
	if err != nil {
		return err
	}
	l.procs[key] = pr
	return nil
}

func (l *Lab) startSidecar(ctx context.Context, pod *Pod, role, listen, upstream string) error {
	p := l.Spec.Proxy
	cdir := filepath.Join(l.Dir, role+"-proxy")
	if err := os.MkdirAll(cdir, 0o755); err != nil {
		return err
	}
	d := sidecarData{Listen: listen, Upstream: upstream, ConfigDir: cdir, Role: role, Hopscope: l.Spec.Hopscope, GRPC: l.Spec.Protocol == "grpc"}
	if role == "server" {
		d.Delay = p.Delay
	}
	if p.Stamps {
		d.Stamps = filepath.Join(cdir, "stamps.csv")
	}
	argv, err := p.render(d)
	if err != nil {
		return err
	}
	env := []string{"XDG_DATA_HOME=" + cdir, "XDG_CONFIG_HOME=" + cdir}
	if err := l.start(ctx, pod, "proxy", argv, listen, env); err != nil {
		return fmt.Errorf("%s sidecar (%s): %w", role, p.Name, err)
	}
	return nil
}

// intercept installs the REDIRECT rules, one nftables table per pod (it goes
// with the pod's namespace).
func (l *Lab) intercept(ctx context.Context) error {
	p := l.Spec.Ports
	rules := map[*Pod]string{
		l.client: fmt.Sprintf(`table ip hopscope_lab {
	chain output {
		type nat hook output priority -100; policy accept;
		ip daddr %s tcp dport %d redirect to :%d
	}
}
`, l.server.IP(), p.App, p.Outbound),
		l.server: fmt.Sprintf(`table ip hopscope_lab {
	chain prerouting {
		type nat hook prerouting priority -100; policy accept;
		tcp dport %d redirect to :%d
	}
}
`, p.App, p.Inbound),
	}
	for pod, r := range rules {
		f := filepath.Join(l.Dir, strings.TrimPrefix(pod.Name, l.Spec.Name+"-")+".nft")
		if err := os.WriteFile(f, []byte(r), 0o644); err != nil {
			return err
		}
		if err := pod.Run(ctx, []string{"nft", "-f", f}, nil); err != nil {
			return fmt.Errorf("interception: %w (needs nftables: apt-get install nftables)", err)
		}
	}
	return nil
}

// ClientPod is where the load generator runs.
func (l *Lab) ClientPod() *Pod { return l.client }

// ServerPod is where the app runs.
func (l *Lab) ServerPod() *Pod { return l.server }

// Proc returns one of the lab's processes: "server-app", "server-proxy",
// "client-proxy"; nil if the lab has none of that name.
func (l *Lab) Proc(key string) *Proc { return l.procs[key] }

// URL is what the load generator in the client pod requests: the app
// directly (baseline, and mesh with interception), or the client sidecar;
// http://HOST:PORT/ or, for gRPC, grpc://HOST:PORT.
func (l *Lab) URL() string {
	scheme, path := "http", "/"
	if l.Spec.Protocol == "grpc" {
		scheme, path = "grpc", ""
	}
	if l.Spec.Topology == Mesh && !l.Spec.Intercept {
		return fmt.Sprintf("%s://127.0.0.1:%d%s", scheme, l.Spec.Ports.Outbound, path)
	}
	return fmt.Sprintf("%s://%s:%d%s", scheme, l.server.IP(), l.Spec.Ports.App, path)
}

// ProxyStamps is the reference proxy's stamps file of one side ("client" or
// "server"), when ProxySpec.Stamps is set.
func (l *Lab) ProxyStamps(role string) string {
	return filepath.Join(l.Dir, role+"-proxy", "stamps.csv")
}

// Targets are the client and server pods as the probe and sampler see them.
func (l *Lab) Targets() []target.Target {
	var out []target.Target
	mesh := l.Spec.Topology == Mesh
	if l.client != nil {
		t := l.client.Target()
		t.Role = target.Client
		if mesh {
			t.Loopback = "lo"
			t.OutboundPort = l.Spec.Ports.Outbound
			if pr := l.procs["client-proxy"]; pr != nil {
				t.ProxyCgroup, t.ProxyPID = pr.Cgroup, pr.PID
			}
		}
		out = append(out, t)
	}
	if l.server != nil {
		t := l.server.Target()
		t.Role = target.Server
		t.AppPort = l.Spec.Ports.App
		if pr := l.procs["server-app"]; pr != nil {
			t.AppCgroup = pr.Cgroup
		}
		if mesh {
			t.Loopback = "lo"
			t.InboundPort = l.Spec.Ports.Inbound
			if pr := l.procs["server-proxy"]; pr != nil {
				t.ProxyCgroup, t.ProxyPID = pr.Cgroup, pr.PID
			}
		}
		out = append(out, t)
	}
	return out
}

// RunInClient runs argv to completion in the client pod, in the cgroup
// <root>/<lab>/client-load, and returns its standard output. Its standard
// error goes to client-load.log in the lab's directory and is quoted in
// the error if it fails.
func (l *Lab) RunInClient(ctx context.Context, argv []string) ([]byte, error) {
	var out bytes.Buffer
	log := filepath.Join(l.Dir, "client-load.log")
	err := l.client.RunIn(ctx, argv, &out, RunOptions{Cgroup: l.Spec.CgroupRoot + "/" + l.Spec.Name + "/client-load", Log: log})
	return out.Bytes(), err
}

// Down stops the lab's processes and removes everything it made. It is
// idempotent.
func (l *Lab) Down() error {
	var errs []error
	for _, key := range []string{"client-proxy", "server-proxy", "server-app"} {
		if pr := l.procs[key]; pr != nil {
			if err := pr.Stop(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := Cleanup(l.Spec.Name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (l *Lab) state() State {
	st := State{Spec: l.Spec, Dir: l.Dir, Created: time.Now().UTC(), Targets: l.Targets()}
	for _, p := range []*Pod{l.client, l.server} {
		if p != nil {
			st.Pods = append(st.Pods, PodState{Name: p.Name, Netns: p.NetnsPath, Addr: p.Addr.String(), HostPeer: p.HostPeer, Bridge: p.Bridge})
		}
	}
	if l.client != nil && l.server != nil {
		st.URL = l.URL()
	}
	for _, key := range []string{"client-proxy", "server-proxy", "server-app"} {
		if pr := l.procs[key]; pr != nil {
			st.Procs = append(st.Procs, ProcState{Name: key, PID: pr.PID, Cgroup: pr.Cgroup, Log: pr.Log, Argv: pr.argv, Running: pr.Running()})
		}
	}
	return st
}

func (l *Lab) writeState() error {
	b, err := json.MarshalIndent(l.state(), "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(l.Dir, "lab.json"), append(b, '\n'), 0o644)
}

// Status reads the state of the lab called name, checking which of its
// processes still run.
func Status(name string) (State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(StateDir, name, "lab.json"))
	if errors.Is(err, os.ErrNotExist) {
		return st, fmt.Errorf("lab %s is not up (no %s): hopscope lab up --name %s", name, filepath.Join(StateDir, name), name)
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("lab %s: state file: %w", name, err)
	}
	for i := range st.Procs {
		st.Procs[i].Running = alive(st.Procs[i].PID) && inCgroup(st.Procs[i].PID, st.Procs[i].Cgroup)
	}
	return st, nil
}

// Labs lists the labs with a state directory.
func Labs() []string {
	ents, _ := os.ReadDir(StateDir)
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}
