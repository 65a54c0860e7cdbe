package agent

import (
	"net/http"
	"regexp"
	"strings"
	"sync"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/hopscope/hopscope/clock"
	"github.com/hopscope/hopscope/hist"
	"github.com/hopscope/hopscope/probe"
	"github.com/hopscope/hopscope/sampler"
)

// Window is what the API returns for a run window: per pod, the hop
// histograms recorded between start and stop (or now, while running) and
// the resources of its proxy and app.
type Window struct {
	Name    string               `json:"name"`
	StartNs int64                `json:"start_ns"` // clock.Now at start
	EndNs   int64                `json:"end_ns"`   // at stop, or now while running
	Running bool                 `json:"running"`
	Pods    map[string]PodWindow `json:"pods"` // by namespace/name
	Probe   ProbeWindow          `json:"probe"`
}

// PodWindow is one pod's share of a window.
type PodWindow struct {
	Hops      map[string]hist.Encoded    `json:"hops"`                // HdrHistogram, ns
	Summary   map[string]hist.Summary    `json:"summary"`             // the same, summarized
	Resources map[string]WindowResources `json:"resources,omitempty"` // "proxy", "app"
}

// WindowResources are one container's figures over a window.
type WindowResources struct {
	CPUSeconds         *float64 `json:"cpu_seconds"` // used within the window
	MemoryCurrentBytes *int64   `json:"memory_current_bytes"`
	// MemoryPeakBytes is the peak since the agent began sampling the
	// container (PeakScope "since_attach"): kernel peaks cannot be reset per
	// window without disturbing other readers.
	MemoryPeakBytes *int64            `json:"memory_peak_bytes"`
	PeakScope       string            `json:"peak_scope,omitempty"`
	Absent          map[string]string `json:"absent,omitempty"`
}

// ProbeWindow is the probe's account over the window.
type ProbeWindow struct {
	Events   uint64 `json:"events"`
	Drops    uint64 `json:"drops"`
	Requests uint64 `json:"requests"`
	Partial  uint64 `json:"partial"`
	Error    string `json:"error,omitempty"`
}

// mark is everything measured so far, at one instant.
type mark struct {
	ns     int64
	hops   map[string]probe.Hists // by target (namespace/name)
	health probe.Health
	res    map[string]sampler.Resources // by source name
}

type window struct {
	name       string
	start, end *mark // end nil while running
}

type windows struct {
	a     *Agent
	mu    sync.Mutex
	m     map[string]*window
	order []string // oldest first, to bound how many are kept
}

const maxWindows = 64

var windowName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

func newWindows(a *Agent) *windows { return &windows{a: a, m: map[string]*window{}} }

func (a *Agent) mark() *mark {
	m := &mark{ns: clock.Now(), hops: map[string]probe.Hists{}, res: map[string]sampler.Resources{}}
	if a.probe != nil {
		r := a.probe.Result()
		m.hops, m.health = r.Targets, r.Probe
		if m.hops == nil {
			m.hops = map[string]probe.Hists{}
		}
	}
	if a.sampler != nil {
		for _, s := range a.sampler.Snapshot().Sources {
			m.res[s.Name] = s
		}
	}
	return m
}

func (ws *windows) start(name string) (Window, error) {
	if !windowName.MatchString(name) {
		return Window{}, apiError{http.StatusBadRequest, "window name: 1 to 128 of A-Z a-z 0-9 . _ -"}
	}
	w := &window{name: name, start: ws.a.mark()}
	ws.mu.Lock()
	if _, ok := ws.m[name]; !ok {
		ws.order = append(ws.order, name)
	}
	ws.m[name] = w
	for len(ws.order) > maxWindows {
		delete(ws.m, ws.order[0])
		ws.order = ws.order[1:]
	}
	ws.mu.Unlock()
	return w.result(ws.a.mark()), nil
}

func (ws *windows) stop(name string) (Window, error) {
	ws.mu.Lock()
	w, ok := ws.m[name]
	ws.mu.Unlock()
	if !ok {
		return Window{}, apiError{http.StatusNotFound, "no window " + name + ": start it first (POST /api/v1/windows/" + name + "/start)"}
	}
	end := ws.a.mark()
	ws.mu.Lock()
	if w.end == nil {
		w.end = end
	}
	ws.mu.Unlock()
	return w.result(nil), nil
}

func (ws *windows) get(name string) (Window, error) {
	ws.mu.Lock()
	w, ok := ws.m[name]
	ws.mu.Unlock()
	if !ok {
		return Window{}, apiError{http.StatusNotFound, "no window " + name}
	}
	var now *mark
	if w.end == nil {
		now = ws.a.mark()
	}
	return w.result(now), nil
}

// result is the difference between the window's start and its end (or now).
func (w *window) result(now *mark) Window {
	end := w.end
	out := Window{Name: w.name, StartNs: w.start.ns, Running: end == nil, Pods: map[string]PodWindow{}}
	if end == nil {
		end = now
	}
	out.EndNs = end.ns
	for tn, hs := range end.hops {
		pw := PodWindow{Hops: map[string]hist.Encoded{}, Summary: map[string]hist.Summary{}}
		for hop, h := range hs {
			d := subtract(h, w.start.hops[tn][hop])
			if d.TotalCount() == 0 {
				continue
			}
			pw.Hops[hop] = hist.Encoded{H: d}
			pw.Summary[hop] = hist.Summarize(d)
		}
		out.Pods[tn] = pw
	}
	for name, r := range end.res {
		key, role := splitSource(name)
		pw, ok := out.Pods[key]
		if !ok {
			pw = PodWindow{Hops: map[string]hist.Encoded{}, Summary: map[string]hist.Summary{}}
		}
		if pw.Resources == nil {
			pw.Resources = map[string]WindowResources{}
		}
		wr := WindowResources{MemoryCurrentBytes: r.MemoryCurrentBytes, MemoryPeakBytes: r.MemoryPeakBytes, Absent: r.Absent}
		if r.MemoryPeakBytes != nil {
			wr.PeakScope = "since_attach"
		}
		if r.CPUSeconds != nil {
			v := *r.CPUSeconds
			if s, ok := w.start.res[name]; ok && s.CPUSeconds != nil {
				v -= *s.CPUSeconds
			}
			wr.CPUSeconds = &v
		}
		pw.Resources[role] = wr
		out.Pods[key] = pw
	}
	e, s := end.health, w.start.health
	out.Probe = ProbeWindow{Events: e.Events - s.Events, Drops: e.Drops - s.Drops,
		Requests: e.Requests - s.Requests, Partial: e.Partial - s.Partial, Error: e.Error}
	return out
}

// splitSource splits "ns/pod/proxy" into "ns/pod" and "proxy".
func splitSource(name string) (key, role string) {
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return name, ""
	}
	return name[:i], name[i+1:]
}

// subtract returns a-b, count by count (b may be nil). Both are hist.New
// histograms, so their buckets line up.
func subtract(a, b *hdrhistogram.Histogram) *hdrhistogram.Histogram {
	if b == nil || b.TotalCount() == 0 {
		c := hist.New()
		c.Merge(a)
		return c
	}
	sa, sb := a.Export(), b.Export()
	for i := range sa.Counts {
		if i < len(sb.Counts) {
			sa.Counts[i] -= sb.Counts[i]
		}
		if sa.Counts[i] < 0 { // the pod was detached and attached again
			sa.Counts[i] = 0
		}
	}
	return hdrhistogram.Import(sa)
}
