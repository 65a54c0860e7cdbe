package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hopscope/hopscope/harness/lab"
	"github.com/hopscope/hopscope/harness/load"
	"github.com/hopscope/hopscope/probe"
	"github.com/hopscope/hopscope/sampler"
	"github.com/hopscope/hopscope/spawn"
	"github.com/hopscope/hopscope/target"
)

// LabBackend runs scenarios on this machine's lab (package lab): one lab,
// built for each run and taken down after it.
type LabBackend struct {
	// Hopscope is the binary run in the pods (app, reference proxy, load).
	Hopscope string
	// LabName names the lab and everything it makes ("hopscope-bench").
	LabName string
	// CgroupRoot is where the lab's cgroups go ("/hopscope").
	CgroupRoot string
	// Connections is the load generator's initial connection count
	// (default 10); MaxConnections lets the pool grow when every
	// connection is busy (default 64), so that a proxy's slow responses
	// queue in the proxy, not in the client.
	Connections    int
	MaxConnections int

	proxies map[string]lab.ProxyInfo
}

// NewLabBackend returns the lab backend for the running hopscope binary.
func NewLabBackend() (*LabBackend, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the hopscope binary: %w", err)
	}
	return &LabBackend{Hopscope: exe, LabName: "hopscope-bench"}, nil
}

func (b *LabBackend) Name() string { return "lab" }

func (b *LabBackend) proxyInfo() map[string]lab.ProxyInfo {
	if b.proxies == nil {
		b.proxies = map[string]lab.ProxyInfo{}
		for _, p := range lab.Proxies() {
			b.proxies[p.Name] = p
		}
	}
	return b.proxies
}

// DefaultScenarios are the reference proxy and every installed built-in.
func (b *LabBackend) DefaultScenarios() []Scenario {
	var out []Scenario
	info := b.proxyInfo()
	names := []string{"reference"}
	for _, p := range lab.Proxies() {
		if p.Name != "reference" {
			names = append(names, p.Name)
		}
	}
	for _, n := range names {
		if p, ok := info[n]; ok && p.Installed {
			out = append(out, Scenario{Name: n, Proxy: n})
		}
	}
	return out
}

// Prerequisites says, one line each, whether this machine can run the lab:
// root, kernel, and each proxy installed or how to install it.
func (b *LabBackend) Prerequisites() string {
	var s strings.Builder
	s.WriteString("hopscope bench: prerequisites\n")
	if os.Geteuid() == 0 {
		s.WriteString("  root: yes\n")
	} else {
		s.WriteString("  root: NO: the lab needs root (namespaces, cgroups, BPF): run with sudo\n")
	}
	env := CollectEnvironment("")
	fmt.Fprintf(&s, "  kernel: %s (%s, %d CPUs)\n", env.Kernel, env.CPU, env.CPUs)
	if os.Geteuid() == 0 { // unprivileged, feature probes fail for lack of rights
		for _, l := range probe.KernelReport() {
			s.WriteString("  kernel: " + l + "\n")
		}
	}
	if m, err := sampler.DetectMode(); err == nil {
		fmt.Fprintf(&s, "  cgroups: %s\n", m)
	}
	var missing []string
	for _, p := range lab.Proxies() {
		switch {
		case p.Installed && p.Version != "":
			fmt.Fprintf(&s, "  proxy %s: %s\n", p.Name, shortVersion(p.Version))
		case p.Installed:
			fmt.Fprintf(&s, "  proxy %s: %s\n", p.Name, p.Install)
		default:
			fmt.Fprintf(&s, "  proxy %s: not installed (%s)\n", p.Name, p.Install)
			missing = append(missing, strings.TrimPrefix(p.Install, "apt-get install "))
		}
	}
	if len(missing) > 0 {
		fmt.Fprintf(&s, "  to run every proxy: sudo apt-get install %s\n", strings.Join(missing, " "))
	}
	return s.String()
}

func (b *LabBackend) Environment(ctx context.Context, env *Environment) {
	env.Proxies = map[string]string{}
	for name, p := range b.proxyInfo() {
		switch {
		case p.Version != "":
			env.Proxies[name] = shortVersion(p.Version)
		case p.Installed:
			env.Proxies[name] = p.Install
		}
	}
	if m, err := sampler.DetectMode(); err == nil {
		if env.Notes == nil {
			env.Notes = map[string]string{}
		}
		env.Notes["cgroup_mode"] = m.String()
	}
}

// proxySpec turns a scenario into the lab's proxy.
func proxySpec(s Scenario) (lab.ProxySpec, error) {
	if s.Template != "" {
		return lab.ParseProxy(s.Name + "=" + s.Template)
	}
	return lab.ParseProxy(s.Proxy)
}

// Validate checks a scenario's proxy as written (a built-in's name, a
// template that renders), without looking at what is installed.
func (b *LabBackend) Validate(s Scenario) error {
	if s.IsBaseline() {
		return nil
	}
	_, err := proxySpec(s)
	return err
}

func (b *LabBackend) Check(s Scenario) error {
	if s.IsBaseline() {
		return nil
	}
	if _, err := proxySpec(s); err != nil {
		return err
	}
	if s.Template == "" {
		if p := b.proxyInfo()[s.Proxy]; !p.Installed {
			return fmt.Errorf("proxy %s is not installed: %s", s.Proxy, p.Install)
		}
	}
	return nil
}

func (b *LabBackend) spec(s Scenario) (lab.Spec, error) {
	spec := lab.Spec{Name: b.LabName, Topology: lab.Baseline, Hopscope: b.Hopscope, CgroupRoot: b.CgroupRoot}
	if !s.IsBaseline() {
		p, err := proxySpec(s)
		if err != nil {
			return spec, err
		}
		spec.Topology, spec.Proxy = lab.Mesh, p
	}
	return spec, nil
}

func (b *LabBackend) Up(ctx context.Context, s Scenario) (Deployment, error) {
	spec, err := b.spec(s)
	if err != nil {
		return nil, err
	}
	l, err := lab.Up(ctx, spec)
	if err != nil {
		return nil, err
	}
	return &labDeployment{b: b, l: l}, nil
}

func (b *LabBackend) Cleanup(ctx context.Context) error { return lab.Cleanup(b.LabName) }

type labDeployment struct {
	b *LabBackend
	l *lab.Lab
}

func (d *labDeployment) Targets() []target.Target { return d.l.Targets() }

func (d *labDeployment) Down(ctx context.Context) error { return d.l.Down() }

// Load runs `hopscope load` in the client pod, in a cgroup of its own. When
// ctx ends, the generator gets SIGINT, so it stops and writes what it
// measured.
func (d *labDeployment) Load(ctx context.Context, spec LoadSpec) (*load.Result, error) {
	conns, maxConns := d.b.Connections, d.b.MaxConnections
	if conns == 0 {
		conns = 10
	}
	if maxConns == 0 {
		maxConns = 64
	}
	maxConns = max(maxConns, conns)
	args := []string{"load", d.l.URL(),
		"--rate", strconv.Itoa(spec.RateRPS),
		"--duration", spec.Duration.String(), "--warmup", spec.Warmup.String(),
		"--connections", strconv.Itoa(conns), "--max-connections", strconv.Itoa(maxConns),
		"--json", spec.JSON, "--hlog", spec.Hlog, "--quiet"}
	if spec.Records != "" {
		args = append(args, "--records", spec.Records)
	}
	root := d.l.Spec.CgroupRoot
	dirs, err := sampler.MakeCgroup(root + "/" + d.l.Spec.Name + "/client-load")
	if err != nil {
		return nil, fmt.Errorf("load generator's cgroup: %w", err)
	}
	// The generator stops by itself; the bound only guards against a hang.
	hard, cancel := context.WithTimeout(context.WithoutCancel(ctx), spec.Warmup+spec.Duration+time.Minute)
	defer cancel()
	cmd, err := spawn.Command(hard, spawn.Options{Netns: d.l.ClientPod().NetnsPath, Cgroups: dirs}, d.b.Hopscope, args...)
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the load generator: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { cmd.Process.Signal(syscall.SIGINT) })
	defer stop()
	werr := cmd.Wait()
	res, rerr := readLoad(spec.JSON)
	switch {
	case rerr == nil && werr != nil:
		// A result with an exit error: the generator said why (e.g. every
		// request failed); the result stands, the run's checks judge it.
		return res, nil
	case rerr == nil:
		return res, nil
	case werr != nil:
		return nil, fmt.Errorf("load generator: %v: %s", werr, lastLine(stderr.String()))
	default:
		return nil, fmt.Errorf("load generator wrote no result: %w", rerr)
	}
}

var versionRE = regexp.MustCompile(`v?\d+\.\d+[0-9A-Za-z.+~-]*`)

// shortVersion picks the version number out of a proxy's version banner
// ("nginx version: nginx/1.22.1" -> "1.22.1").
func shortVersion(banner string) string {
	if v := versionRE.FindString(banner); v != "" {
		return v
	}
	return banner
}

func readLoad(path string) (*load.Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r load.Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	if r.LatencyHist.H == nil {
		return nil, errors.New("load result without latency_hist")
	}
	return &r, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if s == "" {
		return "(no message)"
	}
	return s
}
