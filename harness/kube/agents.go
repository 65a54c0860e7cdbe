package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hopscope/hopscope/agent"
	"github.com/hopscope/hopscope/harness/bench"
	"github.com/hopscope/hopscope/hist"
	"github.com/hopscope/hopscope/target"
)

// Agents reaches the node agents' APIs.
type Agents interface {
	// List names the running agents.
	List(ctx context.Context) ([]string, error)
	// Do sends a request to one agent's API and returns the body.
	Do(ctx context.Context, agent, method, path string) ([]byte, error)
}

// ProxyAgents reaches agents through the API server's pod proxy
// (pods/proxy): no route to the nodes is needed, only RBAC for it. The
// proxy consumes the caller's Authorization header, so the agent's token
// travels in agent.TokenHeader.
type ProxyAgents struct {
	Client    kubernetes.Interface
	Namespace string // "hopscope"
	Selector  string // "app.kubernetes.io/name=hopscope-agent"
	Port      int    // 9464
	Token     string
}

// AgentToken reads the agents' token from their Secret (deploy/namespace.yaml).
func AgentToken(ctx context.Context, c kubernetes.Interface, ns, secret string) (string, error) {
	s, err := c.CoreV1().Secrets(ns).Get(ctx, secret, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("read the agents' token (secret %s/%s): %w", ns, secret, target.ExplainAPIError(err))
	}
	tok := strings.TrimSpace(string(s.Data["token"]))
	if tok == "" {
		return "", fmt.Errorf("secret %s/%s has no 'token' key", ns, secret)
	}
	return tok, nil
}

func (p *ProxyAgents) List(ctx context.Context) ([]string, error) {
	pods, err := p.Client.CoreV1().Pods(p.Namespace).List(ctx, metav1.ListOptions{LabelSelector: p.Selector})
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", target.ExplainAPIError(err))
	}
	var out []string
	for _, pod := range pods.Items {
		if pod.Status.Phase == "Running" {
			out = append(out, pod.Name)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no running agent in namespace %s (%s): kubectl apply -f deploy/", p.Namespace, p.Selector)
	}
	return out, nil
}

func (p *ProxyAgents) Do(ctx context.Context, name, method, path string) ([]byte, error) {
	req := p.Client.CoreV1().RESTClient().Verb(method).Namespace(p.Namespace).Resource("pods").
		Name(fmt.Sprintf("%s:%d", name, p.Port)).SubResource("proxy").Suffix(path).
		SetHeader(agent.TokenHeader, p.Token)
	b, err := req.DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("agent %s %s %s: %w", name, method, path, err)
	}
	return b, nil
}

// AgentObserver marks each run's window on every agent and reads back the
// run's hop histograms and resources: the cluster's counterpart of the
// lab's probe and sampler observers.
type AgentObserver struct {
	Agents Agents

	mu      sync.Mutex
	started map[string][]string // run ID -> agents whose window started
	ns      map[string]string   // run ID -> namespace of its pods
}

var _ bench.Observer = (*AgentObserver)(nil)

// Begin starts the window named for the run on every agent.
func (o *AgentObserver) Begin(ctx context.Context, run *bench.Run, targets []target.Target) {
	o.mu.Lock()
	if o.started == nil {
		o.started, o.ns = map[string][]string{}, map[string]string{}
	}
	o.mu.Unlock()
	run.Probe = bench.ProbeHealth{State: bench.ProbeStateFailed}
	agents, err := o.Agents.List(ctx)
	if err != nil {
		run.Probe.Reason = err.Error()
		return
	}
	var ok []string
	var errs []string
	for _, a := range agents {
		if _, err := o.Agents.Do(ctx, a, "POST", "/api/v1/windows/"+run.ID+"/start"); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		ok = append(ok, a)
	}
	ns := ""
	if len(targets) > 0 {
		ns = targets[0].Namespace
	}
	o.mu.Lock()
	o.started[run.ID], o.ns[run.ID] = ok, ns
	o.mu.Unlock()
	if len(errs) > 0 {
		run.Probe.Reason = strings.Join(errs, "; ")
	}
}

// End stops the run's windows, merges the hops of the run's pods over all
// agents into the run, and records each pod's resources ("<pod>/proxy").
func (o *AgentObserver) End(run *bench.Run, dir string) {
	o.mu.Lock()
	agents, ns := o.started[run.ID], o.ns[run.ID]
	delete(o.started, run.ID)
	delete(o.ns, run.ID)
	o.mu.Unlock()
	if len(agents) == 0 {
		return
	}
	ctx := context.Background()
	hops := map[string]*hdrhistogram.Histogram{}
	res := map[string]json.RawMessage{}
	var h bench.ProbeHealth
	var errs []error
	for _, a := range agents {
		body, err := o.Agents.Do(ctx, a, "POST", "/api/v1/windows/"+run.ID+"/stop")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var w agent.Window
		if err := json.Unmarshal(body, &w); err != nil {
			errs = append(errs, fmt.Errorf("agent %s: window: %w", a, err))
			continue
		}
		h.Events += int64(w.Probe.Events)
		h.Drops += int64(w.Probe.Drops)
		for key, pw := range w.Pods {
			if ns != "" && !strings.HasPrefix(key, ns+"/") {
				continue // another experiment's or another app's pods
			}
			for hop, e := range pw.Hops {
				if hops[hop] == nil {
					hops[hop] = hist.New()
				}
				hops[hop].Merge(e.H)
			}
			for role, r := range pw.Resources {
				b, _ := json.Marshal(benchResource(r))
				res[strings.TrimPrefix(key, ns+"/")+"/"+role] = b
			}
		}
	}
	if len(errs) > 0 {
		h.State, h.Reason = bench.ProbeStateFailed, errors.Join(errs...).Error()
	} else if len(hops) == 0 {
		h.State, h.Reason = bench.ProbeStateFailed, "the agents saw no hops for namespace "+ns+" (is the agent running on the pods' nodes? GET /healthz)"
	} else {
		h.State = bench.ProbeStateOK
	}
	run.Probe = h
	if len(hops) > 0 {
		run.SetHopHists(hops)
	}
	if len(res) > 0 {
		run.Resources = res
	} else {
		run.ResourcesAbsent = "the agents reported no resources for namespace " + ns
	}
}

// Close releases nothing: windows end with their runs.
func (o *AgentObserver) Close() {}

// benchResource puts an agent's window figures in the keys of the
// sampler's document, which the bench aggregates read (bench.Resource).
func benchResource(r agent.WindowResources) map[string]any {
	m := map[string]any{
		"memory_peak_bytes":    r.MemoryPeakBytes,
		"memory_current_bytes": r.MemoryCurrentBytes,
		"peak_source":          "agent",
		"peak_scope":           r.PeakScope,
	}
	if r.CPUSeconds != nil {
		m["cpu_usec"] = int64(*r.CPUSeconds * 1e6)
		m["cpu_seconds"] = *r.CPUSeconds
	} else {
		m["cpu_usec"] = nil
	}
	if len(r.Absent) > 0 {
		m["absent"] = r.Absent
	}
	return m
}
