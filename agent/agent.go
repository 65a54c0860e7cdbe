package agent

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/types"

	"github.com/hopscope/hopscope/probe"
	"github.com/hopscope/hopscope/sampler"
	"github.com/hopscope/hopscope/target"
)

// Probe is what the agent needs of the probe (*probe.Probe): attach and
// detach targets by name (Target.String()), and the hop histograms so far.
type Probe interface {
	Attach(t target.Target) error
	Detach(name string) error
	Result() probe.Result
}

// Sampler is what the agent needs of the sampler (*sampler.Sampler).
type Sampler interface {
	Add(src sampler.Source) error
	Remove(name string) (sampler.Resources, bool)
	Snapshot() sampler.Result
}

// Discovery is where pods come from (*target.Watcher).
type Discovery interface {
	Run(ctx context.Context, handle func(target.PodEvent))
	APIStatus() (synced bool, err error)
}

// Agent attaches what discovery finds and serves what is measured.
type Agent struct {
	cfg     Config
	probe   Probe   // nil: no probe (its start failed; see problems)
	sampler Sampler // nil: no sampler

	mu       sync.Mutex
	pods     map[types.UID]*pod
	problems map[string]string // what -> message, e.g. "kubeconfig"
	disc     Discovery
	windows  *windows
}

// pod is one registry entry: what was resolved and what was done with it.
type pod struct {
	uid      types.UID
	key      string // namespace/name
	target   target.Target
	attached bool     // the probe holds it
	settled  bool     // attached, or unattributable: a resync leaves it be
	sources  []string // sampler source names added
	reason   string   // why it is not attached (Unattributable or an attach error)
}

// Source names in the sampler: one per pod and container role.
func proxySource(key string) string { return key + "/proxy" }
func appSource(key string) string   { return key + "/app" }

// New returns an agent. p or s may be nil when they could not start: the
// agent then serves discovery and health, and says what is missing.
func New(cfg Config, p Probe, s Sampler) (*Agent, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, probe: p, sampler: s, pods: map[types.UID]*pod{}, problems: map[string]string{}}
	a.windows = newWindows(a)
	if isNil(p) {
		a.probe = nil
		a.problems["probe"] = "probe not running: no hop histograms (see the agent's log for why)"
	}
	if isNil(s) {
		a.sampler = nil
		a.problems["sampler"] = "sampler not running: no CPU or memory figures (see the agent's log for why)"
	}
	return a, nil
}

func isNil(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

// Problem records (or, with a nil err, clears) something wrong that /healthz
// reports, e.g. Problem("kubeconfig", err). The agent keeps serving.
func (a *Agent) Problem(what string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		delete(a.problems, what)
		return
	}
	a.problems[what] = err.Error()
	a.logf("%s: %v", what, err)
}

// Watch runs discovery until ctx ends, attaching and detaching as pods come
// and go; then it detaches everything it attached.
func (a *Agent) Watch(ctx context.Context, d Discovery) {
	a.mu.Lock()
	a.disc = d
	a.mu.Unlock()
	d.Run(ctx, a.Handle)
	a.DetachAll()
}

// Handle applies one discovery event.
func (a *Agent) Handle(ev target.PodEvent) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.pods[ev.UID]
	if ev.Deleted {
		if old != nil {
			a.release(old)
			delete(a.pods, ev.UID)
			a.logf("pod %s gone: detached", old.key)
		}
		return
	}
	if old != nil && old.settled && reflect.DeepEqual(old.target, ev.Target) {
		return // a resync of a pod that has not changed
	}
	if old != nil {
		a.release(old)
	}
	// A pod recreated under the same name while its old UID lingers.
	for uid, p := range a.pods {
		if p.key == ev.Pod && uid != ev.UID {
			a.release(p)
			delete(a.pods, uid)
		}
	}
	p := &pod{uid: ev.UID, key: ev.Pod, target: ev.Target}
	a.pods[ev.UID] = p
	a.attach(p)
}

// attach hands a pod to the probe and the sampler; called with a.mu held.
func (a *Agent) attach(p *pod) {
	t := p.target
	if t.Unattributable != "" {
		p.reason, p.settled = t.Unattributable, true
		a.logf("pod %s not watched: %s", p.key, p.reason)
		return
	}
	if a.probe != nil {
		if err := a.probe.Attach(t); err != nil {
			p.reason = fmt.Sprintf("attach probe: %v", err)
			a.logf("pod %s: %s", p.key, p.reason)
			return
		}
		p.attached = true
	}
	if a.sampler != nil {
		srcs := []sampler.Source{}
		if t.ProxyCgroup != "" || t.ProxyPID != 0 {
			srcs = append(srcs, sampler.Source{Name: proxySource(p.key), Cgroup: t.ProxyCgroup, PID: t.ProxyPID})
		}
		if t.AppCgroup != "" {
			srcs = append(srcs, sampler.Source{Name: appSource(p.key), Cgroup: t.AppCgroup})
		}
		for _, s := range srcs {
			if err := a.sampler.Add(s); err != nil {
				a.logf("pod %s: sample %s: %v", p.key, s.Name, err)
				continue
			}
			p.sources = append(p.sources, s.Name)
		}
	}
	p.settled = true
	a.logf("pod %s attached: netns %s device %s peer %s proxy cgroup %s", p.key, t.NetnsPath, t.Device, t.HostPeer, t.ProxyCgroup)
}

// release undoes attach; called with a.mu held.
func (a *Agent) release(p *pod) {
	if p.attached && a.probe != nil {
		if err := a.probe.Detach(p.target.String()); err != nil {
			a.logf("pod %s: detach: %v", p.key, err)
		}
	}
	p.attached = false
	if a.sampler != nil {
		for _, s := range p.sources {
			a.sampler.Remove(s)
		}
	}
	p.sources = nil
}

// DetachAll releases every pod (at shutdown).
func (a *Agent) DetachAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for uid, p := range a.pods {
		a.release(p)
		delete(a.pods, uid)
	}
}

// PodState is one pod as /healthz and the API show it.
type PodState struct {
	Pod      string        `json:"pod"`
	Attached bool          `json:"attached"`
	Reason   string        `json:"reason,omitempty"`
	Target   target.Target `json:"target"`
}

// Pods lists the registry, sorted by pod.
func (a *Agent) Pods() []PodState {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]PodState, 0, len(a.pods))
	for _, p := range a.pods {
		out = append(out, PodState{Pod: p.key, Attached: p.attached, Reason: p.reason, Target: p.target})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pod < out[j].Pod })
	return out
}

// Health is what /healthz returns.
type Health struct {
	OK       bool       `json:"ok"`
	Problems []string   `json:"problems,omitempty"`
	Attached int        `json:"attached"`
	Pods     []PodState `json:"pods"`
}

// Health says what is wrong: setup problems, the API server's state, pods
// that cannot be watched (hostNetwork pods are listed but are not a fault).
func (a *Agent) Health() Health {
	pods := a.Pods()
	a.mu.Lock()
	var probs []string
	for what, msg := range a.problems {
		probs = append(probs, what+": "+msg)
	}
	d := a.disc
	a.mu.Unlock()
	sort.Strings(probs)
	if d != nil {
		synced, err := d.APIStatus()
		if err != nil {
			probs = append(probs, "kubernetes: "+err.Error())
		} else if !synced {
			probs = append(probs, "kubernetes: waiting for the first pod list from the API server")
		}
	}
	h := Health{Pods: pods}
	for _, p := range pods {
		if p.Attached {
			h.Attached++
		} else if !strings.HasPrefix(p.Reason, "hostNetwork") && p.Reason != "" {
			probs = append(probs, "pod "+p.Pod+": "+p.Reason)
		}
	}
	if a.probe != nil {
		if e := a.probe.Result().Probe.Error; e != "" {
			probs = append(probs, "probe: "+e)
		}
	}
	h.Problems = probs
	h.OK = len(probs) == 0
	return h
}

func (a *Agent) logf(format string, args ...any) {
	if a.cfg.Logf != nil {
		a.cfg.Logf(format, args...)
	}
}
