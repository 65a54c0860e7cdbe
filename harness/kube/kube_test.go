package kube

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/hopscope/hopscope/harness/bench"
	"github.com/hopscope/hopscope/harness/load"
	"github.com/hopscope/hopscope/hist"
)

// cluster is a fake API server whose "kubelet" makes the app ready and runs
// the load generator to completion when told to.
type cluster struct {
	*fake.Clientset
	mu        sync.Mutex
	appReady  bool
	loadEnds  bool
	createdNS []string
}

func newCluster(objs ...runtime.Object) *cluster {
	c := &cluster{Clientset: fake.NewClientset(objs...), appReady: true, loadEnds: true}
	c.PrependReactor("create", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.appReady {
			a.(k8stesting.CreateAction).GetObject().(*appsv1.Deployment).Status.ReadyReplicas = 1
		}
		return false, nil, nil
	})
	c.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.loadEnds {
			p := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
			// a meshed pod: the generator ended, the (non-native) sidecar runs on
			p.Status.Phase = corev1.PodRunning
			p.Status.ContainerStatuses = []corev1.ContainerStatus{
				{Name: "load", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}},
				{Name: "linkerd-proxy", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}},
			}
		}
		return false, nil, nil
	})
	c.PrependReactor("create", "namespaces", func(a k8stesting.Action) (bool, runtime.Object, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.createdNS = append(c.createdNS, a.(k8stesting.CreateAction).GetObject().(*corev1.Namespace).Name)
		return false, nil, nil
	})
	return c
}

func (c *cluster) namespaces(t *testing.T) []corev1.Namespace {
	l, err := c.CoreV1().Namespaces().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// generatorLog is what the load pod prints: its JSON result, the marker,
// its hlog.
func generatorLog(t *testing.T) []byte {
	h := hist.New()
	for i := 1; i <= 100; i++ {
		hist.Record(h, int64(i)*int64(time.Millisecond)/10)
	}
	r := load.Result{URL: "http://app/", RequestedRPS: 200, AchievedRPS: 199.5, Requests: 100, OK: 100,
		Latency: hist.Summarize(h), LatencyHist: hist.Encoded{H: h}, ServiceTimeHist: hist.Encoded{H: h}}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(string(js) + "\n" + resultMarker + "\n#[StartTime: 0]\n")
}

func newBackend(t *testing.T, c *cluster, mesh string) *Backend {
	b, err := NewBackend(c, Config{Mesh: mesh, Image: "ghcr.io/hopscope/hopscope:test", Poll: 10 * time.Millisecond, ReadyTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	log := generatorLog(t)
	b.Logs = func(ctx context.Context, ns, pod string) ([]byte, error) { return log, nil }
	return b
}

func TestUpLoadDownPerMesh(t *testing.T) {
	for _, c := range []struct {
		mesh     string
		scenario bench.Scenario
		nsAnn    map[string]string
		nsLabel  map[string]string
		podAnn   map[string]string
	}{
		{MeshLinkerd, bench.Scenario{Name: "linkerd", Proxy: "linkerd"},
			map[string]string{"linkerd.io/inject": "enabled"}, nil, map[string]string{"linkerd.io/inject": "enabled"}},
		{MeshIstio, bench.Scenario{Name: "istio", Proxy: "istio"},
			nil, map[string]string{"istio-injection": "enabled"}, map[string]string{"sidecar.istio.io/inject": "true"}},
		{MeshLinkerd, bench.Baseline,
			map[string]string{"linkerd.io/inject": "disabled"}, nil, map[string]string{"linkerd.io/inject": "disabled", "sidecar.istio.io/inject": "false"}},
	} {
		t.Run(c.mesh+"-"+c.scenario.Name, func(t *testing.T) {
			cl := newCluster()
			b := newBackend(t, cl, c.mesh)
			ctx := context.Background()
			dep, err := b.Up(ctx, c.scenario)
			if err != nil {
				t.Fatal(err)
			}
			d := dep.(*Deployment)
			ns, err := cl.CoreV1().Namespaces().Get(ctx, d.Namespace, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if ns.Labels[ManagedBy] != ManagerName {
				t.Errorf("namespace labels %v", ns.Labels)
			}
			for k, v := range c.nsAnn {
				if ns.Annotations[k] != v {
					t.Errorf("namespace annotation %s = %q, want %q", k, ns.Annotations[k], v)
				}
			}
			for k, v := range c.nsLabel {
				if ns.Labels[k] != v {
					t.Errorf("namespace label %s = %q, want %q", k, ns.Labels[k], v)
				}
			}
			app, err := cl.AppsV1().Deployments(d.Namespace).Get(ctx, AppName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range c.podAnn {
				if app.Spec.Template.Annotations[k] != v {
					t.Errorf("app pod annotation %s = %q, want %q", k, app.Spec.Template.Annotations[k], v)
				}
			}
			if img := app.Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/hopscope/hopscope:test" {
				t.Errorf("app image %q", img)
			}
			if _, err := cl.CoreV1().Services(d.Namespace).Get(ctx, AppName, metav1.GetOptions{}); err != nil {
				t.Errorf("service: %v", err)
			}

			dir := t.TempDir()
			spec := bench.LoadSpec{RateRPS: 200, Duration: time.Second, JSON: filepath.Join(dir, "load.json"), Hlog: filepath.Join(dir, "client.hlog")}
			r, err := d.Load(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			if r.Requests != 100 || r.LatencyHist.H == nil || r.LatencyHist.H.TotalCount() != 100 {
				t.Errorf("load result %+v", r)
			}
			if b, _ := os.ReadFile(spec.Hlog); !strings.HasPrefix(string(b), "#[StartTime") {
				t.Errorf("client.hlog: %q", b)
			}
			pods, _ := cl.CoreV1().Pods(d.Namespace).List(ctx, metav1.ListOptions{})
			if len(pods.Items) != 1 {
				t.Fatalf("load pods: %d", len(pods.Items))
			}
			lp := pods.Items[0]
			script := strings.Join(lp.Spec.Containers[0].Command, " ")
			if !strings.Contains(script, "hopscope load --rate 200 --duration 1s") || !strings.Contains(script, "http://app."+d.Namespace+".svc:8080/") ||
				lp.Spec.RestartPolicy != corev1.RestartPolicyNever {
				t.Errorf("load pod: %s", script)
			}
			for k, v := range c.podAnn {
				if lp.Annotations[k] != v {
					t.Errorf("load pod annotation %s = %q, want %q", k, lp.Annotations[k], v)
				}
			}

			if err := d.Down(ctx); err != nil {
				t.Fatal(err)
			}
			if left := cl.namespaces(t); len(left) != 0 {
				t.Errorf("left behind: %v", left)
			}
		})
	}
}

func TestBadInputAndFailures(t *testing.T) {
	for _, cfg := range []Config{{Mesh: "consul", Image: "x"}, {Image: "x"}, {Mesh: MeshIstio}} {
		if _, err := NewBackend(fake.NewClientset(), cfg); err == nil {
			t.Errorf("NewBackend(%+v): no error", cfg)
		}
	}
	cl := newCluster()
	b := newBackend(t, cl, MeshLinkerd)
	if err := b.Check(bench.Scenario{Name: "haproxy", Proxy: "haproxy"}); err == nil || !strings.Contains(err.Error(), "--mesh") {
		t.Errorf("Check(haproxy) = %v", err)
	}
	if err := b.Check(bench.Scenario{Name: "istio", Proxy: "istio"}); err == nil {
		t.Error("Check(istio) on a linkerd cluster: no error")
	}

	// The app never becomes ready: Up fails and leaves nothing.
	cl.appReady = false
	if _, err := b.Up(context.Background(), bench.Scenario{Name: "linkerd", Proxy: "linkerd"}); err == nil || !strings.Contains(err.Error(), "ready") {
		t.Errorf("Up with an app never ready: %v", err)
	}
	if left := cl.namespaces(t); len(left) != 0 {
		t.Errorf("after a failed Up: left %v", left)
	}

	// RBAC forbids creating namespaces: said so.
	cl2 := newCluster()
	cl2.PrependReactor("create", "namespaces", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errForbidden
	})
	if _, err := newBackend(t, cl2, MeshLinkerd).Up(context.Background(), bench.Baseline); err == nil || !strings.Contains(err.Error(), "RBAC") {
		t.Errorf("forbidden: %v", err)
	}
}

// TestInterruptedLoadCleansUp: Ctrl-C while the generator runs deletes its
// pod, and Down (which the runner calls without the cancelled context)
// deletes the namespace.
func TestInterruptedLoadCleansUp(t *testing.T) {
	cl := newCluster()
	cl.loadEnds = false
	b := newBackend(t, cl, MeshIstio)
	ctx, cancel := context.WithCancel(context.Background())
	dep, err := b.Up(ctx, bench.Scenario{Name: "istio", Proxy: "istio"})
	if err != nil {
		t.Fatal(err)
	}
	d := dep.(*Deployment)
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	if _, err := d.Load(ctx, bench.LoadSpec{RateRPS: 20, Duration: time.Minute}); !errors.Is(err, context.Canceled) {
		t.Errorf("interrupted Load: %v", err)
	}
	if pods, _ := cl.CoreV1().Pods(d.Namespace).List(context.Background(), metav1.ListOptions{}); len(pods.Items) != 0 {
		t.Errorf("load pod left after Ctrl-C: %d", len(pods.Items))
	}
	if err := d.Down(ctx); err != nil { // a cancelled ctx, as after Ctrl-C
		t.Fatal(err)
	}
	if left := cl.namespaces(t); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

func TestCleanupRemovesOnlyLeftovers(t *testing.T) {
	mine := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "hopscope-bench-linkerd-abc123", Labels: map[string]string{ManagedBy: ManagerName}}}
	other := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "production"}}
	cl := newCluster(mine, other)
	if err := newBackend(t, cl, MeshLinkerd).Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	left := cl.namespaces(t)
	if len(left) != 1 || left[0].Name != "production" {
		t.Errorf("after Cleanup: %v", left)
	}
}

var errForbidden = apierrors.NewForbidden(schema.GroupResource{Resource: "namespaces"}, "", errors.New(`user "dev" cannot create resource "namespaces"`))
