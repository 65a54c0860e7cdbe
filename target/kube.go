package target

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// KubeConn says how to reach the API server, kubectl-style: in-cluster
// config by default, a kubeconfig file and context when given.
type KubeConn struct {
	Kubeconfig string
	Context    string
}

// AddFlags adds --kubeconfig and --context.
func (c *KubeConn) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config, else $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&c.Context, "context", "", "kubeconfig context (default: the file's current context)")
}

// RESTConfig builds the client configuration. Without flags it uses the
// in-cluster config (a pod's ServiceAccount); outside a cluster it falls
// back to $KUBECONFIG or ~/.kube/config, as kubectl does.
func (c KubeConn) RESTConfig() (*rest.Config, error) {
	if c.Kubeconfig == "" && c.Context == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		} else if !errors.Is(err, rest.ErrNotInCluster) {
			return nil, fmt.Errorf("in-cluster config: %w (is the ServiceAccount token mounted?)", err)
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if c.Kubeconfig != "" {
		if _, err := os.Stat(c.Kubeconfig); err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w: pass an existing file with --kubeconfig", c.Kubeconfig, err)
		}
		rules.ExplicitPath = c.Kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: c.Context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		where := c.Kubeconfig
		if where == "" {
			where = strings.Join(rules.Precedence, ":")
		}
		if clientcmd.IsEmptyConfig(err) {
			return nil, fmt.Errorf("not in a cluster and no kubeconfig at %s: pass --kubeconfig (or run the agent as a pod)", where)
		}
		return nil, fmt.Errorf("kubeconfig %s does not load: %v: fix it or pass another with --kubeconfig/--context", where, err)
	}
	return cfg, nil
}

// Client returns a clientset for the configuration.
func (c KubeConn) Client() (kubernetes.Interface, error) {
	cfg, err := c.RESTConfig()
	if err != nil {
		return nil, err
	}
	cfg.UserAgent = "hopscope"
	return kubernetes.NewForConfig(cfg)
}

// KubeOptions selects the pods an agent watches on its node.
type KubeOptions struct {
	KubeConn
	Namespace string   // "" watches every namespace
	Selector  string   // label selector, kubectl syntax
	NodeName  string   // the agent's node (downward API: NODE_NAME)
	Sidecars  []string // container names of sidecar proxies, beyond the known ones
	AllPods   bool     // also watch pods without a sidecar (baseline runs)
	ProcRoot  string   // the node's /proc (hostPID)
}

// AddFlags adds the kubectl-style flags (-n, -l, --kubeconfig, --context)
// and the agent's own (--node, --sidecar, --all-pods, --proc).
func (o *KubeOptions) AddFlags(fs *pflag.FlagSet) {
	o.KubeConn.AddFlags(fs)
	fs.StringVarP(&o.Namespace, "namespace", "n", "", "watch pods in this namespace only (default: all)")
	fs.StringVarP(&o.Selector, "selector", "l", "", "label selector, as in kubectl (e.g. app=emoji,tier!=db)")
	fs.StringVar(&o.NodeName, "node", os.Getenv("NODE_NAME"), "node whose pods to watch (default $NODE_NAME, set from the downward API)")
	fs.StringSliceVar(&o.Sidecars, "sidecar", nil, "container name of a sidecar proxy, beyond linkerd-proxy and istio-proxy (repeatable)")
	fs.BoolVar(&o.AllPods, "all-pods", false, "also watch pods without a sidecar (baseline)")
	fs.StringVar(&o.ProcRoot, "proc", "/proc", "the node's /proc")
}

// Check validates the options: a node and a selector that parses.
func (o KubeOptions) Check() error {
	if o.NodeName == "" {
		return errors.New("no node name: set NODE_NAME (downward API spec.nodeName) or pass --node")
	}
	if _, err := labels.Parse(o.Selector); err != nil {
		return fmt.Errorf("selector %q: %v", o.Selector, err)
	}
	return nil
}

// Sidecar describes a sidecar proxy known by its container name.
type Sidecar struct {
	Name         string
	InboundPort  uint16
	OutboundPort uint16
}

// KnownSidecars are the meshes' proxies and their default listen ports.
var KnownSidecars = []Sidecar{
	{Name: "linkerd-proxy", InboundPort: 4143, OutboundPort: 4140},
	{Name: "istio-proxy", InboundPort: 15006, OutboundPort: 15001},
}

// Pod annotations that override what the resolver infers.
const (
	AnnotationRole         = "hopscope.io/role"          // client or server
	AnnotationInboundPort  = "hopscope.io/inbound-port"  // sidecar's inbound listen port
	AnnotationOutboundPort = "hopscope.io/outbound-port" // sidecar's outbound listen port
	AnnotationAppPort      = "hopscope.io/app-port"      // app's listen port
)

// Resolver turns a pod into a Target, from the pod's spec and status, the
// node's /proc and netlink.
type Resolver struct {
	ProcRoot string // "/proc" on a node
	// CgroupRoots are the hierarchies' mount points (DefaultCgroupRoots),
	// to resolve paths seen through a private cgroup namespace.
	CgroupRoots []string
	Sidecars    map[string]Sidecar // by container name
	AllPods     bool
	// Links finds the pod device and host peer in a netns (PodLinks).
	Links func(netnsPath string) (device, peer string, err error)

	idx procIndex
}

// procIndex is one scan of /proc, indexed by container ID, shared by the
// pods resolved within indexTTL: a node's pods cost one scan, not one each.
type procIndex struct {
	mu   sync.Mutex
	at   time.Time
	byID map[string][]Process
	err  error
}

const (
	indexTTL   = 200 * time.Millisecond
	indexRetry = 20 * time.Millisecond // a miss rescans if the index is older
)

func (r *Resolver) processes(id ContainerID) ([]Process, error) {
	x := &r.idx
	x.mu.Lock()
	defer x.mu.Unlock()
	scan := func() { x.byID, x.err = ScanContainers(r.ProcRoot); x.at = time.Now() }
	if x.byID == nil || time.Since(x.at) > indexTTL {
		scan()
	} else if len(x.byID[id.ID]) == 0 && time.Since(x.at) > indexRetry {
		scan() // the container may have started since
	}
	return x.byID[id.ID], x.err
}

// NewResolver returns a resolver for the options' sidecars and /proc.
func NewResolver(o KubeOptions) *Resolver {
	r := &Resolver{ProcRoot: o.ProcRoot, CgroupRoots: DefaultCgroupRoots, Sidecars: map[string]Sidecar{}, AllPods: o.AllPods, Links: PodLinks}
	if r.ProcRoot == "" {
		r.ProcRoot = "/proc"
	}
	for _, s := range KnownSidecars {
		r.Sidecars[s.Name] = s
	}
	for _, n := range o.Sidecars {
		if _, ok := r.Sidecars[n]; !ok {
			r.Sidecars[n] = Sidecar{Name: n}
		}
	}
	return r
}

// Resolve describes a pod. watch is false for pods the agent ignores (no
// sidecar and not AllPods; finished pods). A pod that cannot be watched
// (hostNetwork, a sidecar with no process yet, an unknown container runtime)
// is returned with Unattributable saying why.
func (r *Resolver) Resolve(pod *corev1.Pod) (t Target, watch bool) {
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return Target{}, false
	}
	t = Target{Name: pod.Name, Namespace: pod.Namespace} // String() is namespace/name, the probe's key

	var sidecar *corev1.Container
	var spec Sidecar
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		if s, ok := r.Sidecars[c.Name]; ok && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sidecar, spec = c, s // a native sidecar
		}
	}
	var app *corev1.Container
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if s, ok := r.Sidecars[c.Name]; ok && sidecar == nil {
			sidecar, spec = c, s
		} else if app == nil && c.Name != sidecarName(sidecar) {
			app = c
		}
	}
	if sidecar == nil && !r.AllPods {
		return Target{}, false
	}

	if sidecar != nil {
		t.InboundPort, t.OutboundPort = spec.InboundPort, spec.OutboundPort
		if spec.Name == "linkerd-proxy" { // the injector writes the real ports in env
			t.InboundPort = envPort(sidecar, "LINKERD2_PROXY_INBOUND_LISTEN_ADDR", t.InboundPort)
			t.OutboundPort = envPort(sidecar, "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR", t.OutboundPort)
		}
		if t.InboundPort == 0 && t.OutboundPort == 0 && len(sidecar.Ports) > 0 {
			t.InboundPort = uint16(sidecar.Ports[0].ContainerPort)
		}
		t.InboundPort = annotationPort(pod, AnnotationInboundPort, t.InboundPort)
		t.OutboundPort = annotationPort(pod, AnnotationOutboundPort, t.OutboundPort)
		t.Loopback = "lo"
	}
	if app != nil && len(app.Ports) > 0 {
		t.AppPort = uint16(app.Ports[0].ContainerPort)
	}
	t.AppPort = annotationPort(pod, AnnotationAppPort, t.AppPort)
	switch Role(pod.Annotations[AnnotationRole]) {
	case Client:
		t.Role = Client
	case Server:
		t.Role = Server
	default:
		if t.AppPort != 0 {
			t.Role = Server
		} else {
			t.Role = Client
		}
	}

	if pod.Spec.HostNetwork {
		t.Unattributable = "hostNetwork pod: it shares the node's network namespace, so its traffic cannot be told apart from the node's"
		return t, true
	}

	// The proxy's process gives the netns; without a sidecar, the app's does.
	lead := sidecar
	if lead == nil {
		lead = app
	}
	if lead == nil {
		t.Unattributable = "pod has no containers"
		return t, true
	}
	procs, id, err := r.containerProcesses(pod, lead.Name)
	if err != nil {
		t.Unattributable = err.Error()
		return t, true
	}
	p := procs[0]
	t.NetnsPath = NetnsPath(r.ProcRoot, p.PID)
	if sidecar != nil {
		t.ProxyPID = p.PID
		t.ProxyCgroup = r.cgroup(p, id)
	}
	if app != nil && app != lead {
		if aprocs, aid, err := r.containerProcesses(pod, app.Name); err == nil {
			t.AppCgroup = r.cgroup(aprocs[0], aid)
		}
	} else if app != nil {
		t.AppCgroup = r.cgroup(p, id)
	}
	if r.Links != nil {
		dev, peer, err := r.Links(t.NetnsPath)
		if err != nil {
			t.Unattributable = fmt.Sprintf("container %s (pid %d): %v", lead.Name, p.PID, err)
			return t, true
		}
		t.Device, t.HostPeer = dev, peer
	}
	return t, true
}

// alive reports whether a resolved target's process still runs in its
// namespace: then a resync need not resolve its pod again.
func (r *Resolver) alive(t Target) bool {
	if t.ProxyPID == 0 || t.NetnsPath == "" {
		return false
	}
	_, err := os.Readlink(t.NetnsPath)
	return err == nil
}

func (r *Resolver) cgroup(p Process, id ContainerID) string {
	return HostCgroupPath(r.ProcRoot, r.CgroupRoots, p.Cgroup(id))
}

func sidecarName(c *corev1.Container) string {
	if c == nil {
		return ""
	}
	return c.Name
}

// containerProcesses finds a container's processes from its status.
func (r *Resolver) containerProcesses(pod *corev1.Pod, name string) ([]Process, ContainerID, error) {
	st := containerStatus(pod, name)
	if st == nil {
		return nil, ContainerID{}, fmt.Errorf("container %s has no process yet: no status reported", name)
	}
	id, err := ParseContainerID(st.ContainerID)
	if errors.Is(err, ErrNoContainerID) {
		why := "not started"
		if st.State.Waiting != nil && st.State.Waiting.Reason != "" {
			why = "waiting: " + st.State.Waiting.Reason
		}
		return nil, id, fmt.Errorf("container %s has no process yet (%s)", name, why)
	}
	if err != nil {
		return nil, id, fmt.Errorf("container %s: %v", name, err)
	}
	procs, err := r.processes(id)
	if err != nil {
		return nil, id, fmt.Errorf("container %s: %v", name, err)
	}
	live := procs[:0]
	for _, p := range procs { // skip zombies and exiting processes: their namespaces are gone
		if _, err := os.Readlink(NetnsPath(r.ProcRoot, p.PID)); err == nil {
			live = append(live, p)
		}
	}
	if procs = live; len(procs) == 0 {
		return nil, id, fmt.Errorf("container %s (%s) has no process in %s/*/cgroup yet (if it runs, the agent needs hostPID)", name, id, r.ProcRoot)
	}
	return procs, id, nil
}

func containerStatus(pod *corev1.Pod, name string) *corev1.ContainerStatus {
	for _, list := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}

func envPort(c *corev1.Container, key string, def uint16) uint16 {
	for _, e := range c.Env {
		if e.Name != key {
			continue
		}
		if _, p, err := net.SplitHostPort(e.Value); err == nil {
			if n, err := strconv.ParseUint(p, 10, 16); err == nil && n > 0 {
				return uint16(n)
			}
		}
	}
	return def
}

func annotationPort(pod *corev1.Pod, key string, def uint16) uint16 {
	if v, ok := pod.Annotations[key]; ok {
		if n, err := strconv.ParseUint(v, 10, 16); err == nil && n > 0 {
			return uint16(n)
		}
	}
	return def
}
