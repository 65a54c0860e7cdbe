package agent

import (
	"net/http"
	"sort"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HopBuckets are the upper bounds (seconds) of the Prometheus hop latency
// histogram: 1 µs to about 16 s, doubling. The exact distribution is in the
// JSON API's HdrHistograms; these buckets are for dashboards and alerts.
var HopBuckets = prometheus.ExponentialBuckets(1e-6, 2, 25)

var (
	descHop = prometheus.NewDesc("hopscope_hop_latency_seconds",
		"Latency of each hop of a request's path, attributed to the pod that owns the hop's later end (cumulative since the pod was attached).",
		[]string{"namespace", "pod", "hop"}, nil)
	descCPU = prometheus.NewDesc("hopscope_proxy_cpu_seconds_total",
		"CPU time used by the pod's sidecar proxy since the agent began sampling it.",
		[]string{"namespace", "pod"}, nil)
	descMem = prometheus.NewDesc("hopscope_proxy_memory_bytes",
		"Current memory of the pod's sidecar proxy (cgroup memory.current or usage_in_bytes).",
		[]string{"namespace", "pod"}, nil)
	descPeak = prometheus.NewDesc("hopscope_proxy_memory_peak_bytes",
		"Peak memory of the pod's sidecar proxy since the agent began sampling it.",
		[]string{"namespace", "pod"}, nil)
	descEvents = prometheus.NewDesc("hopscope_probe_events_total",
		"Events the probe read from its ring buffer.", nil, nil)
	descDrops = prometheus.NewDesc("hopscope_probe_drops_total",
		"Events the kernel dropped because the probe's ring buffer was full.", nil, nil)
	descPods = prometheus.NewDesc("hopscope_pods",
		"Pods in the agent's registry, by state (attached, unattributable).",
		[]string{"state"}, nil)
)

// collector turns the probe's and the sampler's figures into metrics at
// scrape time, so nothing is recorded twice.
type collector struct{ a *Agent }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHop, descCPU, descMem, descPeak, descEvents, descDrops, descPods} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	pods := a.Pods()
	attached, unattributable := 0, 0
	nsName := map[string][2]string{} // namespace/name -> labels
	for _, p := range pods {
		if p.Attached {
			attached++
		} else if p.Reason != "" {
			unattributable++
		}
		nsName[p.Target.String()] = [2]string{p.Target.Namespace, p.Target.Name}
	}
	ch <- prometheus.MustNewConstMetric(descPods, prometheus.GaugeValue, float64(attached), "attached")
	ch <- prometheus.MustNewConstMetric(descPods, prometheus.GaugeValue, float64(unattributable), "unattributable")

	if a.probe != nil {
		r := a.probe.Result()
		ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(r.Probe.Events))
		ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(r.Probe.Drops))
		names := make([]string, 0, len(r.Targets))
		for tn := range r.Targets {
			names = append(names, tn)
		}
		sort.Strings(names)
		for _, tn := range names {
			l, ok := nsName[tn]
			if !ok {
				l = splitKey(tn)
			}
			for hop, h := range r.Targets[tn] {
				count, sum, buckets := promBuckets(h)
				ch <- prometheus.MustNewConstHistogram(descHop, count, sum, buckets, l[0], l[1], hop)
			}
		}
	}
	if a.sampler != nil {
		for _, s := range a.sampler.Snapshot().Sources {
			key, role := splitSource(s.Name)
			if role != "proxy" {
				continue
			}
			l, ok := nsName[key]
			if !ok {
				l = splitKey(key)
			}
			if s.CPUSeconds != nil {
				ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, *s.CPUSeconds, l[0], l[1])
			}
			if s.MemoryCurrentBytes != nil {
				ch <- prometheus.MustNewConstMetric(descMem, prometheus.GaugeValue, float64(*s.MemoryCurrentBytes), l[0], l[1])
			}
			if s.MemoryPeakBytes != nil {
				ch <- prometheus.MustNewConstMetric(descPeak, prometheus.GaugeValue, float64(*s.MemoryPeakBytes), l[0], l[1])
			}
		}
	}
}

func splitKey(key string) [2]string {
	ns, name := splitSource(key)
	return [2]string{ns, name}
}

// promBuckets converts an HdrHistogram (ns) into cumulative Prometheus
// buckets (seconds). A recorded value counts in the first bucket whose
// bound is at or above the highest value equivalent to it, so a bucket
// never claims a value it may not hold.
func promBuckets(h *hdrhistogram.Histogram) (count uint64, sum float64, buckets map[float64]uint64) {
	buckets = make(map[float64]uint64, len(HopBuckets))
	bars := h.Distribution()
	per := make([]uint64, len(HopBuckets))
	for _, b := range bars {
		if b.Count == 0 {
			continue
		}
		count += uint64(b.Count)
		v := float64(b.To) / 1e9
		for i, ub := range HopBuckets {
			if v <= ub {
				per[i] += uint64(b.Count)
				break
			}
		}
	}
	var cum uint64
	for i, ub := range HopBuckets {
		cum += per[i]
		buckets[ub] = cum
	}
	sum = h.Mean() * float64(h.TotalCount()) / 1e9
	return count, sum, buckets
}

func (a *Agent) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{a})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
