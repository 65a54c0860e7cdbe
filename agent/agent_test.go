package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/hopscope/hopscope/agent/nodetest"
	"github.com/hopscope/hopscope/probe"
	"github.com/hopscope/hopscope/reqid"
	"github.com/hopscope/hopscope/sampler"
	"github.com/hopscope/hopscope/target"
)

const testToken = "s3cret-token-for-tests"

// TestAgentOnFakeNode is the "must be shown": pods served by a fake
// API server whose container IDs name processes this test started, in
// cgroups named as containerd and CRI-O name them (systemd and cgroupfs
// drivers) and in network namespaces joined to this one by veths. The agent
// finds each sidecar's netns, device, peer and cgroups, attaches the real
// probe and sampler, serves hop histograms for traffic sent through the
// reference proxy, and detaches when a pod is deleted.
func TestAgentOnFakeNode(t *testing.T) {
	node := nodetest.New(t, "ag")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// web: the reference proxy in front of the test app, containerd+systemd.
	web := node.Pod("shop", "web", false)
	webApp := web.Container("web", nodetest.ContainerdSystemd, false, []int32{8080}, childCmd(t, "app", "127.0.0.1:8080")...)
	webProxy := web.Container("linkerd-proxy", nodetest.ContainerdSystemd, false, nil, childCmd(t, "proxy", "0.0.0.0:4143", "127.0.0.1:8080")...)
	// api: istio, CRI-O+systemd.
	api := node.Pod("shop", "api", false)
	apiProxy := api.Container("istio-proxy", nodetest.CrioSystemd, false, nil)
	apiApp := api.Container("api", nodetest.CrioSystemd, false, []int32{9000})
	// native: a native sidecar (init container, restartPolicy Always), CRI-O+cgroupfs.
	native := node.Pod("mesh", "native", false)
	nativeProxy := native.Container("linkerd-proxy", nodetest.CrioCgroupfs, true, nil)
	nativeApp := native.Container("api", nodetest.CrioCgroupfs, false, []int32{9000})
	// legacy: containerd+cgroupfs.
	legacy := node.Pod("mesh", "legacy", false)
	legacyProxy := legacy.Container("linkerd-proxy", nodetest.ContainerdCgroupfs, false, nil)
	legacyApp := legacy.Container("api", nodetest.ContainerdCgroupfs, false, []int32{9000})
	// hostnet: hostNetwork, not attributable.
	hostnet := node.Pod("shop", "hostnet", true)
	hostnet.Obj.Spec.Containers = []corev1.Container{{Name: "app"}, {Name: "linkerd-proxy"}}
	// pending: the sidecar has no process yet; it starts later.
	pending := node.Pod("shop", "pending", false)
	pending.Obj.Spec.Containers = []corev1.Container{{Name: "app"}, {Name: "linkerd-proxy"}}
	pending.Obj.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "linkerd-proxy",
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}}}
	// odd: a runtime the agent does not know.
	odd := node.Pod("shop", "odd", false)
	odd.Obj.Spec.Containers = []corev1.Container{{Name: "app"}, {Name: "istio-proxy"}}
	odd.Obj.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "istio-proxy", ContainerID: "docker://" + strings.Repeat("ab", 32)}}
	// elsewhere: another node's pod, never seen.
	elsewhere := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "elsewhere", UID: "uid-elsewhere"},
		Spec: corev1.PodSpec{NodeName: "another-node", Containers: []corev1.Container{{Name: "linkerd-proxy"}}}}

	client := fake.NewClientset(web.Obj, api.Obj, native.Obj, legacy.Obj, hostnet.Obj, pending.Obj, odd.Obj, elsewhere)

	p, err := probe.Start(ctx, probe.Config{Logf: t.Logf})
	if err != nil {
		t.Fatalf("start probe: %v", err)
	}
	defer p.Close()
	s := sampler.New(sampler.Config{Interval: 50 * time.Millisecond, NoSeries: true})
	s.Start(ctx)

	// 127.0.0.2 is loopback, but not the default address: the token is required.
	if _, err := New(Config{Addr: "127.0.0.2:0"}, p, s); err == nil || !strings.Contains(err.Error(), "--token-file") {
		t.Fatalf("127.0.0.2 without a token: %v, want a refusal naming --token-file", err)
	}
	a, err := New(Config{Addr: "127.0.0.2:0", Token: testToken, Logf: t.Logf}, p, s)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	go a.ServeListener(ctx, ln)
	base := "http://" + ln.Addr().String()

	opts := target.KubeOptions{NodeName: node.NodeName, ProcRoot: "/proc"}
	w, err := target.NewWatcher(client, opts, target.NewResolver(opts))
	if err != nil {
		t.Fatal(err)
	}
	w.Resync = time.Second
	watchCtx, stopWatch := context.WithCancel(ctx) // the probe outlives the watch
	done := make(chan struct{})
	go func() { a.Watch(watchCtx, w); close(done) }()
	defer func() { stopWatch(); <-done }()

	type want struct {
		pod        *nodetest.Pod
		proxy, app nodetest.Container
	}
	attachedWant := map[string]want{
		"shop/web": {web, webProxy, webApp}, "shop/api": {api, apiProxy, apiApp},
		"mesh/native": {native, nativeProxy, nativeApp}, "mesh/legacy": {legacy, legacyProxy, legacyApp},
	}
	states := waitPods(t, a, "four pods attached, three reported", func(ps map[string]PodState) bool {
		n := 0
		for k := range attachedWant {
			if ps[k].Attached {
				n++
			}
		}
		return n == 4 && ps["shop/hostnet"].Reason != "" && ps["shop/pending"].Reason != "" && ps["shop/odd"].Reason != ""
	})
	for key, wt := range attachedWant {
		tg := states[key].Target
		if !sameNetns(t, tg.NetnsPath, wt.pod.Netns) {
			t.Errorf("%s: netns %s is not the pod's %s", key, tg.NetnsPath, wt.pod.Netns)
		}
		if tg.Device != "eth0" || tg.HostPeer != wt.pod.HostDev {
			t.Errorf("%s: device %q peer %q, want eth0 and %q", key, tg.Device, tg.HostPeer, wt.pod.HostDev)
		}
		if tg.ProxyCgroup != wt.proxy.Cgroup || tg.AppCgroup != wt.app.Cgroup || tg.ProxyPID != wt.proxy.PID {
			t.Errorf("%s: cgroups %q %q pid %d, want %q %q %d", key, tg.ProxyCgroup, tg.AppCgroup, tg.ProxyPID, wt.proxy.Cgroup, wt.app.Cgroup, wt.proxy.PID)
		}
	}
	if _, ok := states["shop/elsewhere"]; ok {
		t.Error("a pod of another node was registered")
	}
	for key, want := range map[string]string{
		"shop/hostnet": "hostNetwork",
		"shop/pending": "container linkerd-proxy has no process yet (waiting: ContainerCreating)",
		"shop/odd":     "docker runtime",
	} {
		if !strings.Contains(states[key].Reason, want) {
			t.Errorf("%s: reason %q, want %q", key, states[key].Reason, want)
		}
	}
	// Each attached pod: eth0 ingress, egress and lo: 3 points.
	if pts := p.Result().Probe.Points; pts != 12 {
		t.Errorf("probe points %d, want 12 (3 for each of 4 pods)", pts)
	}
	srcs := sources(s)
	for key := range attachedWant {
		if !srcs[key+"/proxy"] || !srcs[key+"/app"] {
			t.Errorf("%s: sampler sources %v lack its proxy and app", key, srcs)
		}
	}

	// /healthz: what is wrong, by pod; the hostNetwork pod is not a fault.
	var h Health
	if code := getJSON(t, base+"/healthz", "", &h); code != http.StatusServiceUnavailable || h.OK {
		t.Errorf("/healthz: %d ok=%v, want 503", code, h.OK)
	}
	probs := strings.Join(h.Problems, "\n")
	if !strings.Contains(probs, "pod shop/pending: container linkerd-proxy has no process yet") ||
		!strings.Contains(probs, "pod shop/odd") || strings.Contains(probs, "hostnet") {
		t.Errorf("/healthz problems:\n%s", probs)
	}

	// Without the token: 401, on the API and on /metrics.
	for _, path := range []string{"/metrics", "/api/v1/pods", "/api/v1/windows/w1"} {
		if code := getJSON(t, base+path, "", nil); code != http.StatusUnauthorized {
			t.Errorf("GET %s without token: %d, want 401", path, code)
		}
		if code := getJSON(t, base+path, "wrong", nil); code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong token: %d, want 401", path, code)
		}
	}
	if code := post(t, base+"/api/v1/windows/w1/start", ""); code != http.StatusUnauthorized {
		t.Errorf("POST start without token: %d, want 401", code)
	}

	// Traffic through the proxy in a marked window.
	if code := post(t, base+"/api/v1/windows/w1/start", testToken); code != http.StatusOK {
		t.Fatalf("start window: %d", code)
	}
	const n = 200
	sendRequests(t, fmt.Sprintf("http://%s:4143", web.PodIP), n)
	if code := post(t, base+"/api/v1/windows/w1/stop", testToken); code != http.StatusOK {
		t.Fatalf("stop window: %d", code)
	}
	sendRequests(t, fmt.Sprintf("http://%s:4143", web.PodIP), 50) // after the window: not in it
	var win Window
	if code := getJSON(t, base+"/api/v1/windows/w1", testToken, &win); code != http.StatusOK {
		t.Fatalf("get window: %d", code)
	}
	pw := win.Pods["shop/web"]
	for _, hop := range []string{probe.HopServerProxyIn, probe.HopApp, probe.HopServerProxyOut} {
		e, ok := pw.Hops[hop]
		if !ok {
			t.Errorf("window: no %s histogram for shop/web (have %v)", hop, keys(pw.Hops))
			continue
		}
		if e.H.TotalCount() != n {
			t.Errorf("window: %s count %d, want %d", hop, e.H.TotalCount(), n)
		}
		t.Logf("window %s: p50 %d ns p99 %d ns", hop, pw.Summary[hop].P50, pw.Summary[hop].P99)
	}
	if r := pw.Resources["proxy"]; r.CPUSeconds == nil || *r.CPUSeconds <= 0 {
		t.Errorf("window: proxy CPU %v, want > 0 (resources %+v)", r.CPUSeconds, pw.Resources)
	}

	// /metrics: the same hops as Prometheus histograms, by namespace, pod, hop.
	fams := scrape(t, base+"/metrics")
	counts := map[string]uint64{}
	for _, m := range fams["hopscope_hop_latency_seconds"].GetMetric() {
		l := labels(m)
		if l["namespace"] == "shop" && l["pod"] == "web" {
			counts[l["hop"]] = m.GetHistogram().GetSampleCount()
		}
	}
	for _, hop := range []string{probe.HopServerProxyIn, probe.HopApp, probe.HopServerProxyOut} {
		if counts[hop] != n+50 {
			t.Errorf("/metrics: shop/web %s count %d, want %d", hop, counts[hop], n+50)
		}
	}
	for _, name := range []string{"hopscope_proxy_cpu_seconds_total", "hopscope_proxy_memory_bytes", "hopscope_probe_events_total", "hopscope_probe_drops_total"} {
		if len(fams[name].GetMetric()) == 0 {
			t.Errorf("/metrics: no %s", name)
		}
	}
	if ev := fams["hopscope_probe_events_total"].GetMetric(); len(ev) == 0 || ev[0].GetCounter().GetValue() == 0 {
		t.Error("/metrics: no probe events counted")
	}

	// The pending pod's sidecar starts: attached live.
	pending.Obj.Spec.Containers, pending.Obj.Status.ContainerStatuses = nil, nil
	pendingProxy := pending.Container("linkerd-proxy", nodetest.ContainerdSystemd, false, nil)
	pending.Container("app", nodetest.ContainerdSystemd, false, []int32{8080})
	if _, err := client.CoreV1().Pods("shop").Update(ctx, pending.Obj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	states = waitPods(t, a, "shop/pending attached", func(ps map[string]PodState) bool { return ps["shop/pending"].Attached })
	if tg := states["shop/pending"].Target; tg.ProxyCgroup != pendingProxy.Cgroup || tg.HostPeer != pending.HostDev {
		t.Errorf("shop/pending: %+v", tg)
	}

	// Pods deleted: detached from the probe and the sampler.
	for _, pod := range []*nodetest.Pod{api, native} {
		if err := client.CoreV1().Pods(pod.Obj.Namespace).Delete(ctx, pod.Obj.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitPods(t, a, "shop/api and mesh/native gone", func(ps map[string]PodState) bool {
		_, a := ps["shop/api"]
		_, b := ps["mesh/native"]
		return !a && !b
	})
	if pts := p.Result().Probe.Points; pts != 9 {
		t.Errorf("after deleting two pods: probe points %d, want 9 (web, legacy, pending)", pts)
	}
	srcs = sources(s)
	if srcs["shop/api/proxy"] || srcs["mesh/native/proxy"] || !srcs["shop/web/proxy"] {
		t.Errorf("after deleting two pods: sampler sources %v", srcs)
	}

	// When the watch ends, everything is detached.
	stopWatch()
	<-done
	if pts := p.Result().Probe.Points; pts != 0 {
		t.Errorf("after the agent stopped: %d probe points left", pts)
	}
}

func waitPods(t *testing.T, a *Agent, what string, ok func(map[string]PodState) bool) map[string]PodState {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		m := map[string]PodState{}
		for _, p := range a.Pods() {
			m[p.Pod] = p
		}
		if ok(m) {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; pods: %+v", what, m)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func sameNetns(t *testing.T, a, b string) bool {
	var sa, sb unix.Stat_t
	if unix.Stat(a, &sa) != nil || unix.Stat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

func sources(s *sampler.Sampler) map[string]bool {
	m := map[string]bool{}
	for _, r := range s.Snapshot().Sources {
		m[r.Name] = true
	}
	return m
}

func sendRequests(t *testing.T, url string, n int) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	for i := 0; i < n; i++ {
		resp, err := c.Get(url + "/x?" + reqid.String(uint64(0x6b0000+i)))
		if err != nil {
			t.Fatalf("request %d through the proxy: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %s", i, resp.Status)
		}
		time.Sleep(time.Millisecond)
	}
}

func request(t *testing.T, method, url, token string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp
}

func getJSON(t *testing.T, url, token string, v any) int {
	t.Helper()
	resp := request(t, "GET", url, token)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil && resp.StatusCode != http.StatusUnauthorized {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v: %s", url, err, b)
		}
	}
	return resp.StatusCode
}

func post(t *testing.T, url, token string) int {
	t.Helper()
	resp := request(t, "POST", url, token)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp := request(t, "GET", url, testToken)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s: %s", resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
