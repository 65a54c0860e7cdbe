package target

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/hopscope/hopscope/agent/nodetest"
)

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		t.Fatalf("stat %s: %v", a, err)
	}
	if err := unix.Stat(b, &sb); err != nil {
		t.Fatalf("stat %s: %v", b, err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// TestResolveRealPods resolves pods whose containers are real processes in
// cgroups named as each runtime and driver names them, in real netns.
func TestResolveRealPods(t *testing.T) {
	node := nodetest.New(t, "res")
	r := NewResolver(KubeOptions{Sidecars: []string{"envoy"}})

	type want struct {
		pod     *nodetest.Pod
		proxy   nodetest.Container
		app     nodetest.Container
		in, out uint16
		role    Role
	}
	var cases []want

	p := node.Pod("shop", "linkerd", false)
	cases = append(cases, want{pod: p, app: p.Container("web", nodetest.ContainerdSystemd, false, []int32{8080}),
		proxy: p.Container("linkerd-proxy", nodetest.ContainerdSystemd, false, nil), in: 4143, out: 4140, role: Server})

	p = node.Pod("shop", "istio", false)
	cases = append(cases, want{pod: p, proxy: p.Container("istio-proxy", nodetest.CrioCgroupfs, false, nil),
		app: p.Container("loadgen", nodetest.CrioCgroupfs, false, nil), in: 15006, out: 15001, role: Client})

	p = node.Pod("mesh", "native", false) // native sidecar: an init container with restartPolicy Always
	cases = append(cases, want{pod: p, proxy: p.Container("linkerd-proxy", nodetest.CrioSystemd, true, nil),
		app: p.Container("api", nodetest.CrioSystemd, false, []int32{9000}), in: 4143, out: 4140, role: Server})

	p = node.Pod("mesh", "custom", false) // a sidecar named by flag, cgroupfs containerd
	cases = append(cases, want{pod: p, proxy: p.Container("envoy", nodetest.ContainerdCgroupfs, false, []int32{10000}),
		app: p.Container("api", nodetest.ContainerdCgroupfs, false, []int32{9000}), in: 10000, role: Server})

	for _, c := range cases {
		tg, watch := r.Resolve(c.pod.Obj)
		name := c.pod.Obj.Name
		if !watch || tg.Unattributable != "" {
			t.Fatalf("%s: watch %v, unattributable %q", name, watch, tg.Unattributable)
		}
		if tg.Name != name || tg.Namespace != c.pod.Obj.Namespace || tg.String() != c.pod.Obj.Namespace+"/"+name {
			t.Errorf("%s: named %q in %q", name, tg.Name, tg.Namespace)
		}
		if !sameFile(t, tg.NetnsPath, c.pod.Netns) {
			t.Errorf("%s: netns %s is not the pod's %s", name, tg.NetnsPath, c.pod.Netns)
		}
		if tg.Device != "eth0" || tg.HostPeer != c.pod.HostDev || tg.Loopback != "lo" {
			t.Errorf("%s: device %q peer %q lo %q, want eth0 %q lo", name, tg.Device, tg.HostPeer, tg.Loopback, c.pod.HostDev)
		}
		if tg.ProxyCgroup != c.proxy.Cgroup || tg.AppCgroup != c.app.Cgroup || tg.ProxyPID != c.proxy.PID {
			t.Errorf("%s: proxy cgroup %q app %q pid %d, want %q %q %d", name, tg.ProxyCgroup, tg.AppCgroup, tg.ProxyPID,
				c.proxy.Cgroup, c.app.Cgroup, c.proxy.PID)
		}
		if tg.InboundPort != c.in || tg.OutboundPort != c.out || tg.Role != c.role {
			t.Errorf("%s: ports %d/%d role %s, want %d/%d %s", name, tg.InboundPort, tg.OutboundPort, tg.Role, c.in, c.out, c.role)
		}
	}

	// hostNetwork: reported, with the reason.
	hp := node.Pod("shop", "hostnet", true)
	hp.Obj.Spec.Containers = []corev1.Container{{Name: "linkerd-proxy"}, {Name: "app"}}
	if tg, watch := r.Resolve(hp.Obj); !watch || !strings.Contains(tg.Unattributable, "hostNetwork") {
		t.Errorf("hostNetwork pod: watch %v, unattributable %q", watch, tg.Unattributable)
	}

	// A pod without a sidecar is ignored unless AllPods.
	bp := node.Pod("shop", "bare", false)
	bc := bp.Container("web", nodetest.ContainerdSystemd, false, []int32{8080})
	if _, watch := r.Resolve(bp.Obj); watch {
		t.Error("pod without sidecar watched")
	}
	all := NewResolver(KubeOptions{AllPods: true})
	if tg, watch := all.Resolve(bp.Obj); !watch || tg.HasProxy() || tg.AppCgroup != bc.Cgroup || tg.Loopback != "" || tg.Device != "eth0" {
		t.Errorf("baseline pod: %+v, watch %v", tg, watch)
	}

	// The proxy's process exits: no process yet, said so.
	lp := cases[0]
	lp.proxy.Stop(t)
	if tg, _ := r.Resolve(lp.pod.Obj); !strings.Contains(tg.Unattributable, "has no process") {
		t.Errorf("stopped proxy: unattributable %q", tg.Unattributable)
	}
}

func TestResolveBadInput(t *testing.T) {
	r := NewResolver(KubeOptions{ProcRoot: t.TempDir()})
	pod := func(id string, waiting string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}, {Name: "istio-proxy"}}}}
		st := corev1.ContainerStatus{Name: "istio-proxy", ContainerID: id}
		if waiting != "" {
			st.State.Waiting = &corev1.ContainerStateWaiting{Reason: waiting}
		}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{st}
		return p
	}
	for _, c := range []struct {
		pod  *corev1.Pod
		want string
	}{
		{pod("", "ContainerCreating"), "container istio-proxy has no process yet (waiting: ContainerCreating)"},
		{pod("docker://"+idA, ""), "docker runtime"},
		{pod("garden://"+idA, ""), `unknown runtime "garden"`},
		{pod("containerd://"+idA, ""), "has no process in"},
		{&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "istio-proxy"}}}}, "no status reported"},
	} {
		tg, watch := r.Resolve(c.pod)
		if !watch || !strings.Contains(tg.Unattributable, c.want) {
			t.Errorf("got watch %v, %q; want %q", watch, tg.Unattributable, c.want)
		}
	}
}

func TestKubeConnBadKubeconfig(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "config")
	os.WriteFile(bad, []byte("apiVersion: v1\nclusters: [this is: not: yaml\n"), 0o600)
	_, err := KubeConn{Kubeconfig: bad}.Client()
	if err == nil || !strings.Contains(err.Error(), "does not load") || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad kubeconfig: %v", err)
	}
	_, err = KubeConn{Kubeconfig: filepath.Join(dir, "missing")}.Client()
	if err == nil || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Errorf("missing kubeconfig: %v", err)
	}
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: a, context: {cluster: c, user: u}}]
current-context: a
`), 0o600)
	if _, err := (KubeConn{Kubeconfig: good}).RESTConfig(); err != nil {
		t.Errorf("good kubeconfig: %v", err)
	}
	if _, err := (KubeConn{Kubeconfig: good, Context: "nope"}).RESTConfig(); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown context: %v", err)
	}
}

// events collects a watcher's events.
type events struct {
	mu  sync.Mutex
	got []PodEvent
}

func (e *events) add(ev PodEvent) { e.mu.Lock(); e.got = append(e.got, ev); e.mu.Unlock() }

func (e *events) wait(t *testing.T, what string, ok func([]PodEvent) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		e.mu.Lock()
		done := ok(e.got)
		e.mu.Unlock()
		if done {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	t.Fatalf("timed out waiting for %s; events: %+v", what, e.got)
}

func sidecarPod(ns, name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: k8stypes.UID("uid-" + name), Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app"}, {Name: "linkerd-proxy"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{
			{Name: "linkerd-proxy", ContainerID: "containerd://" + idA}}},
	}
}

func TestWatcherFiltersAndFollows(t *testing.T) {
	client := fake.NewClientset(
		sidecarPod("a", "mine", "n1", map[string]string{"app": "x"}),
		sidecarPod("a", "other-node", "n2", map[string]string{"app": "x"}),
		sidecarPod("a", "other-label", "n1", map[string]string{"app": "y"}),
		sidecarPod("b", "other-ns", "n1", map[string]string{"app": "x"}),
	)
	opts := KubeOptions{Namespace: "a", Selector: "app=x", NodeName: "n1", ProcRoot: t.TempDir()}
	w, err := NewWatcher(client, opts, NewResolver(opts))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var ev events
	go w.Run(ctx, ev.add)
	ev.wait(t, "a/mine", func(g []PodEvent) bool { return len(g) > 0 })
	ev.mu.Lock()
	for _, e := range ev.got {
		if e.Pod != "a/mine" {
			t.Errorf("event for %s, which the selectors exclude", e.Pod)
		}
	}
	if !strings.Contains(ev.got[0].Target.Unattributable, "has no process") {
		t.Errorf("process-less sidecar: %q", ev.got[0].Target.Unattributable)
	}
	ev.mu.Unlock()
	if synced, err := w.APIStatus(); !synced || err != nil {
		t.Errorf("APIStatus = %v, %v", synced, err)
	}
	// A pod added later, then deleted: both seen.
	if _, err := client.CoreV1().Pods("a").Create(ctx, sidecarPod("a", "late", "n1", map[string]string{"app": "x"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, "a/late added", func(g []PodEvent) bool { return has(g, "a/late", false) })
	if err := client.CoreV1().Pods("a").Delete(ctx, "late", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, "a/late deleted", func(g []PodEvent) bool { return has(g, "a/late", true) })
}

func has(g []PodEvent, pod string, deleted bool) bool {
	for _, e := range g {
		if e.Pod == pod && e.Deleted == deleted {
			return true
		}
	}
	return false
}

// TestWatcherAPIErrors: an API server that refuses (RBAC) or cannot be
// reached is reported with what to do, and the watcher recovers when the
// server answers again.
func TestWatcherAPIErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"forbidden", apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New(`User "system:serviceaccount:hopscope:agent" cannot list resource "pods"`)), "RBAC forbids"},
		{"unreachable", &netTimeout{}, "API server unreachable"},
		{"unavailable", apierrors.NewServiceUnavailable("etcd down"), "API server unreachable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			client := fake.NewClientset(sidecarPod("a", "mine", "n1", nil))
			heal := nodetest.FailPods(client, c.err)
			opts := KubeOptions{NodeName: "n1", ProcRoot: t.TempDir()}
			w, _ := NewWatcher(client, opts, NewResolver(opts))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var ev events
			go w.Run(ctx, ev.add)
			deadline := time.Now().Add(10 * time.Second)
			for {
				_, err := w.APIStatus()
				if err != nil && strings.Contains(err.Error(), c.want) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("APIStatus = %v, want %q", err, c.want)
				}
				time.Sleep(20 * time.Millisecond)
			}
			heal()
			ev.wait(t, "recovery", func(g []PodEvent) bool { return len(g) > 0 })
			if synced, err := w.APIStatus(); !synced || err != nil {
				t.Errorf("after recovery: APIStatus = %v, %v", synced, err)
			}
		})
	}
}

type netTimeout struct{}

func (*netTimeout) Error() string   { return "dial tcp 10.96.0.1:443: i/o timeout" }
func (*netTimeout) Timeout() bool   { return true }
func (*netTimeout) Temporary() bool { return true }
