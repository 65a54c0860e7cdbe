package kube

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/hopscope/hopscope/agent"
	"github.com/hopscope/hopscope/harness/bench"
	"github.com/hopscope/hopscope/hist"
	"github.com/hopscope/hopscope/probe"
	"github.com/hopscope/hopscope/target"
)

// recorder is a probe that records what the test tells it: per target and
// hop, cumulative histograms, as the real probe's Result gives them.
type recorder struct{ hists map[string]probe.Hists }

func (r *recorder) Attach(target.Target) error { return nil }
func (r *recorder) Detach(string) error        { return nil }
func (r *recorder) Result() probe.Result {
	out := probe.Result{Targets: map[string]probe.Hists{}}
	for tn, hs := range r.hists {
		cp := probe.Hists{}
		for hop, h := range hs {
			c := hist.New()
			c.Merge(h)
			cp[hop] = c
		}
		out.Targets[tn] = cp
	}
	return out
}

func (r *recorder) add(tn, hop string, n int, v time.Duration) {
	if r.hists[tn] == nil {
		r.hists[tn] = probe.Hists{}
	}
	if r.hists[tn][hop] == nil {
		r.hists[tn][hop] = hist.New()
	}
	for i := 0; i < n; i++ {
		hist.Record(r.hists[tn][hop], int64(v))
	}
}

// urlAgents reaches real agent servers by URL, with the token.
type urlAgents struct {
	urls  map[string]string
	token string
}

func (u urlAgents) List(context.Context) ([]string, error) {
	var out []string
	for n := range u.urls {
		out = append(out, n)
	}
	return out, nil
}

func (u urlAgents) Do(ctx context.Context, name, method, path string) ([]byte, error) {
	req, _ := http.NewRequestWithContext(ctx, method, u.urls[name]+path, nil)
	req.Header.Set(agent.TokenHeader, u.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	return b, nil
}

// TestAgentObserverGathersWindows: two node agents (the real server, with a
// recording probe), a run window on each; the observer merges the run's
// namespace's hops across nodes and leaves other namespaces out.
func TestAgentObserverGathersWindows(t *testing.T) {
	const tok = "tkn"
	probes := map[string]*recorder{}
	urls := map[string]string{}
	for _, node := range []string{"agent-a", "agent-b"} {
		p := &recorder{hists: map[string]probe.Hists{}}
		a, err := agent.New(agent.Config{Addr: "0.0.0.0:0", Token: tok}, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(a.Handler())
		t.Cleanup(srv.Close)
		probes[node], urls[node] = p, srv.URL
	}
	ns := "hopscope-bench-linkerd-0a0b0c"
	// Before the window: not counted.
	probes["agent-a"].add(ns+"/app-1", probe.HopServerProxyIn, 50, time.Millisecond)

	o := &AgentObserver{Agents: urlAgents{urls: urls, token: tok}}
	run := &bench.Run{ID: "linkerd-200-1"}
	o.Begin(context.Background(), run, []target.Target{{Name: "load", Namespace: ns, Role: target.Client}})
	probes["agent-a"].add(ns+"/app-1", probe.HopServerProxyIn, 100, 2*time.Millisecond)
	probes["agent-b"].add(ns+"/load-200-1", probe.HopClientProxyOut, 100, time.Millisecond)
	probes["agent-b"].add("other/pod", probe.HopServerProxyIn, 999, time.Millisecond)
	o.End(run, t.TempDir())

	if run.Probe.State != bench.ProbeStateOK {
		t.Fatalf("probe state %s: %s", run.Probe.State, run.Probe.Reason)
	}
	hs := run.HopHists()
	for hop, want := range map[string]int64{probe.HopServerProxyIn: 100, probe.HopClientProxyOut: 100} {
		h := hs[hop]
		if h == nil || h.TotalCount() != want {
			t.Errorf("hop %s: %v, want %d samples", hop, count(h), want)
		}
	}
	if p50 := hs[probe.HopServerProxyIn].ValueAtQuantile(50); p50 < int64(1900*time.Microsecond) {
		t.Errorf("server-proxy/in p50 %d ns: the window counted samples from before it", p50)
	}

	// An agent that is not reachable: the run says why, without hops.
	bad := &AgentObserver{Agents: urlAgents{urls: map[string]string{"gone": "http://127.0.0.1:1"}, token: tok}}
	run2 := &bench.Run{ID: "linkerd-200-2"}
	bad.Begin(context.Background(), run2, nil)
	bad.End(run2, t.TempDir())
	if run2.Probe.State != bench.ProbeStateFailed || !strings.Contains(run2.Probe.Reason, "127.0.0.1:1") {
		t.Errorf("unreachable agent: %+v", run2.Probe)
	}
}

func count(h *hdrhistogram.Histogram) any {
	if h == nil {
		return "none"
	}
	return h.TotalCount()
}

// TestProxyAgentsPath: through a stand-in API server, the pod proxy path
// reaches the agent's API with the token in TokenHeader (the real API server
// consumes Authorization), and List names the running agents.
func TestProxyAgentsPath(t *testing.T) {
	const tok = "tkn"
	a, err := agent.New(agent.Config{Addr: "0.0.0.0:0", Token: tok}, &recorder{hists: map[string]probe.Hists{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	agentHandler := a.Handler()
	prefix := "/api/v1/namespaces/hopscope/pods/hopscope-agent-x1:9464/proxy"
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/api/v1/namespaces/hopscope/pods":
			if r.URL.Query().Get("labelSelector") != "app.kubernetes.io/name=hopscope-agent" {
				http.Error(w, "bad selector "+r.URL.RawQuery, http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"kind":"PodList","apiVersion":"v1","items":[
				{"metadata":{"name":"hopscope-agent-x1","namespace":"hopscope"},"status":{"phase":"Running"}},
				{"metadata":{"name":"hopscope-agent-x2","namespace":"hopscope"},"status":{"phase":"Pending"}}]}`)
		case strings.HasPrefix(r.URL.Path, prefix+"/"):
			r.Header.Del("Authorization") // as the API server does
			r.URL.Path = strings.TrimPrefix(r.URL.Path, prefix)
			agentHandler.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	}))
	defer api.Close()
	client, err := kubernetes.NewForConfig(&rest.Config{Host: api.URL})
	if err != nil {
		t.Fatal(err)
	}
	pa := &ProxyAgents{Client: client, Namespace: "hopscope", Selector: "app.kubernetes.io/name=hopscope-agent", Port: 9464, Token: tok}
	names, err := pa.List(context.Background())
	if err != nil || len(names) != 1 || names[0] != "hopscope-agent-x1" {
		t.Fatalf("List = %v, %v", names, err)
	}
	if _, err := pa.Do(context.Background(), names[0], "POST", "/api/v1/windows/r1/start"); err != nil {
		t.Fatal(err)
	}
	b, err := pa.Do(context.Background(), names[0], "GET", "/api/v1/windows/r1")
	if err != nil || !strings.Contains(string(b), `"name": "r1"`) {
		t.Fatalf("GET window: %s, %v", b, err)
	}
	pa.Token = "wrong"
	if _, err := pa.Do(context.Background(), names[0], "GET", "/api/v1/windows/r1"); err == nil {
		t.Error("a wrong token was accepted")
	}
}

// TestBenchRunnerOnFakeCluster runs bench's own runner with this backend and
// observer: the plan's runs deploy into namespaces on the fake API server,
// the client's results come from the generator's log, the hops from the
// agents' windows, and the results directory is written.
func TestBenchRunnerOnFakeCluster(t *testing.T) {
	const tok = "tkn"
	rec := &recorder{hists: map[string]probe.Hists{}}
	a, err := agent.New(agent.Config{Addr: "0.0.0.0:0", Token: tok}, rec, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()

	cl := newCluster()
	b := newBackend(t, cl, MeshLinkerd)
	logs := b.Logs
	b.Logs = func(ctx context.Context, ns, pod string) ([]byte, error) {
		// the traffic of this run, as the agent on the node saw it
		rec.add(ns+"/app-1", probe.HopServerProxyIn, 100, time.Millisecond)
		return logs(ctx, ns, pod)
	}
	cfg := bench.Custom().WithProxies(b.Scenarios()...)
	cfg.RatesRPS, cfg.Runs, cfg.Duration, cfg.Warmup, cfg.DropHighestBaselineMax = []int{200}, 1, bench.Duration(time.Second), 0, 0
	out := t.TempDir()
	r := &bench.Runner{Backend: b, Observers: []bench.Observer{&AgentObserver{Agents: urlAgents{urls: map[string]string{"a": srv.URL}, token: tok}}}}
	e, err := r.Run(context.Background(), cfg, out)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Runs) != 2 {
		t.Fatalf("runs %+v", e.Runs)
	}
	_, runs, err := bench.ReadExperiment(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, run := range runs {
		if run.Client == nil || run.Client.Requests != 100 {
			t.Errorf("run %s: client %+v", run.ID, run.Client)
		}
		if run.Hops[probe.HopServerProxyIn].Count != 100 {
			t.Errorf("run %s: server-proxy/in %+v (probe %+v)", run.ID, run.Hops, run.Probe)
		}
	}
	if left := cl.namespaces(t); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
	if len(cl.createdNS) != 2 || !strings.Contains(strings.Join(cl.createdNS, " "), "hopscope-bench-linkerd-") {
		t.Errorf("namespaces created: %v", cl.createdNS)
	}
}
