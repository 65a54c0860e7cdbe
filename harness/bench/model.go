package bench

import (
	"encoding/json"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/hopscope/hopscope/harness/load"
	"github.com/hopscope/hopscope/hist"
)

// File names inside an experiment directory (DESIGN.md, Results).
const (
	ExperimentFile = "experiment.json"
	SummaryFile    = "summary.md"
	ReportFile     = "report.html"
	RunsDir        = "runs"
	RunFile        = "run.json"
	ClientHlog     = "client.hlog"
	HopsHlog       = "hops.hlog"
	ResourcesCSV   = "resources.csv"
	// RecordsFile is the load generator's per-request records, kept in the
	// run directory only until the probe has joined them.
	RecordsFile = "records.csv"
)

// Probe states of ProbeHealth.State.
const (
	ProbeStateOK          = "ok"          // attached, hops measured
	ProbeStateOff         = "off"         // --probe=off
	ProbeStateUnavailable = "unavailable" // this build or machine has no probe; Reason says why
	ProbeStateFailed      = "failed"      // it was tried and failed; Reason says how
)

// ProbeHealth is run.json's "probe": whether hops were measured and how
// much the probe saw and lost.
type ProbeHealth struct {
	State     string `json:"state"`
	Reason    string `json:"reason,omitempty"`
	Mode      string `json:"mode,omitempty"` // tcx or clsact
	Events    int64  `json:"events"`
	Drops     int64  `json:"drops"`
	Unmatched int64  `json:"unmatched"`
	// Joined: requests whose timeline was paired with the load
	// generator's record (client/send and client/recv); Unjoined: records
	// or timelines without their other half.
	Joined   int64 `json:"joined,omitempty"`
	Unjoined int64 `json:"unjoined,omitempty"`
	// Detail is the probe's own health document, as it gave it.
	Detail json.RawMessage `json:"detail,omitempty"`
}

// Resource is the part of a sampler result the aggregates use (the keys of
// `hopscope sample --json`); run.json keeps the sampler's whole document.
// A nil figure is absent (the sampler says why), never zero.
type Resource struct {
	CPUUsec            *int64 `json:"cpu_usec"`
	MemoryPeakBytes    *int64 `json:"memory_peak_bytes"`
	PeakSource         string `json:"peak_source"`
	MaxWorkingSetBytes *int64 `json:"max_working_set_bytes"`
}

// Run is one run: what it asked for, what it got, and whether it counts.
// It is runs/<id>/run.json.
type Run struct {
	ID       string    `json:"id"`
	Scenario string    `json:"scenario"`
	Proxy    string    `json:"proxy,omitempty"`
	RateRPS  int       `json:"rate_rps"`
	N        int       `json:"n"`
	Backend  string    `json:"backend"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// SetupNs: building the scenario and attaching observers; TeardownNs:
	// reading observers and tearing down. The experiment's overhead
	// beyond the load itself.
	SetupNs    int64 `json:"setup_ns"`
	TeardownNs int64 `json:"teardown_ns"`

	// Client is the load generator's result (harness/load), with its
	// latency histogram for pooling; absent when the load did not run.
	Client      *load.Result `json:"client,omitempty"`
	ClientError string       `json:"client_error,omitempty"`

	// Hops per hop name (DESIGN.md, the hop model): count and percentiles.
	Hops  map[string]hist.Summary `json:"hops,omitempty"`
	Probe ProbeHealth             `json:"probe"`

	// Resources per source ("client/proxy", "server/proxy", "server/app"):
	// the sampler's document for each.
	Resources       map[string]json.RawMessage `json:"resources,omitempty"`
	ResourcesAbsent string                     `json:"resources_absent,omitempty"`
	// ResourcesWindowNs is how long the sampler watched (CPU time over it
	// is cores).
	ResourcesWindowNs int64 `json:"resources_window_ns,omitempty"`

	Valid          bool     `json:"valid"`
	InvalidReasons []string `json:"invalid_reasons,omitempty"`

	// hopHists are the per-hop histograms behind Hops, for pooling.
	hopHists map[string]*hdrhistogram.Histogram
}

// SetHopHists gives the run its per-hop histograms (from the probe, or read
// back from hops.hlog) and fills Hops from them.
func (r *Run) SetHopHists(hs map[string]*hdrhistogram.Histogram) {
	r.hopHists = hs
	r.Hops = map[string]hist.Summary{}
	for name, h := range hs {
		r.Hops[name] = hist.Summarize(h)
	}
}

// HopHists returns the run's per-hop histograms.
func (r *Run) HopHists() map[string]*hdrhistogram.Histogram { return r.hopHists }

// resources decodes the aggregated subset of each source's document.
func (r *Run) resources() map[string]Resource {
	out := map[string]Resource{}
	for name, raw := range r.Resources {
		var res Resource
		if json.Unmarshal(raw, &res) == nil {
			out[name] = res
		}
	}
	return out
}

// latency is the run's client latency histogram, or nil.
func (r *Run) latency() *hdrhistogram.Histogram {
	if r.Client == nil || r.Client.LatencyHist.H == nil || r.Client.LatencyHist.H.TotalCount() == 0 {
		return nil
	}
	return r.Client.LatencyHist.H
}

// Environment is where the experiment ran.
type Environment struct {
	Backend   string            `json:"backend"`
	Hostname  string            `json:"hostname"`
	Kernel    string            `json:"kernel"`
	CPU       string            `json:"cpu"`
	CPUs      int               `json:"cpus"`
	GoVersion string            `json:"go_version"`
	Hopscope  string            `json:"hopscope_version"`
	Proxies   map[string]string `json:"proxy_versions,omitempty"`
	// Notes: anything else the backend wants on record (cgroup mode, ...).
	Notes map[string]string `json:"notes,omitempty"`
}

// Skip records a scenario (or one cell) that did not run, and why.
type Skip struct {
	Scenario string `json:"scenario"`
	RateRPS  int    `json:"rate_rps,omitempty"` // 0: every rate
	Reason   string `json:"reason"`
}

// RunBrief is a run's line in experiment.json.
type RunBrief struct {
	ID             string   `json:"id"`
	Valid          bool     `json:"valid"`
	InvalidReasons []string `json:"invalid_reasons,omitempty"`
	Dropped        bool     `json:"dropped_outlier,omitempty"`
	// Probe is the run's probe state, with the reason when not "ok".
	Probe string `json:"probe"`
}

// Stat is a mean and one sample standard deviation, over N runs.
type Stat struct {
	Mean float64 `json:"mean"`
	SD   float64 `json:"sd"`
	N    int     `json:"n"`
}

// Added is the latency a scenario adds over baseline at the same rate,
// per percentile key, by both methods.
type Added struct {
	// PerRun: mean of this scenario's per-run percentiles minus baseline's;
	// SD is sqrt(sd_a^2 + sd_b^2) (the runs are independent).
	PerRun map[string]Stat `json:"per_run_mean_ns"`
	// Pooled: pooled percentile minus baseline's pooled percentile, with a
	// 95% interval (PooledCIMethod says which kind).
	Pooled         map[string]int64    `json:"pooled_ns"`
	PooledCI       map[string]Interval `json:"pooled_ci95_ns,omitempty"`
	PooledCIMethod string              `json:"pooled_ci_method,omitempty"`
}

// SourceResources aggregates one sampled source over a cell's kept runs.
type SourceResources struct {
	CPUUsec         *float64 `json:"cpu_usec_mean,omitempty"`  // mean CPU time per run
	CPUCores        *float64 `json:"cpu_cores_mean,omitempty"` // that over the load's duration
	MemoryPeakBytes *int64   `json:"memory_peak_bytes_max,omitempty"`
	PeakSource      string   `json:"peak_source,omitempty"`
}

// DataPlane is the published resource view: the busiest proxy and the sum
// over every proxy, per run (CPU: mean over runs; memory: max over runs).
type DataPlane struct {
	BusiestCPUUsec         *float64 `json:"busiest_cpu_usec,omitempty"`
	BusiestMemoryPeakBytes *int64   `json:"busiest_memory_peak_bytes,omitempty"`
	SumCPUUsec             *float64 `json:"sum_cpu_usec,omitempty"`
	SumMemoryPeakBytes     *int64   `json:"sum_memory_peak_bytes,omitempty"`
	CPUCores               *float64 `json:"sum_cpu_cores,omitempty"`
}

// Cell is one scenario at one rate, over its runs.
type Cell struct {
	Scenario string `json:"scenario"`
	RateRPS  int    `json:"rate_rps"`

	Runs    []string `json:"runs"`             // every run of the cell
	Kept    []string `json:"kept"`             // valid and not dropped: the aggregates' runs
	Invalid []string `json:"invalid"`          // ids of invalid runs (reasons in Runs of the experiment)
	Dropped []string `json:"dropped_outliers"` // by the baseline-max rule

	AchievedRPS *Stat `json:"achieved_rps,omitempty"`

	// The published statistic: mean and sd of the kept runs' percentiles.
	PerRun map[string]Stat `json:"per_run_ns,omitempty"`
	// Pooled: the merged histogram of the kept runs, with 95% intervals:
	// a bootstrap over runs (>= MinBootstrapRuns runs) and the
	// order-statistic interval of the pooled counts (any number of runs;
	// sampling error only).
	Pooled      *hist.Summary       `json:"pooled_ns,omitempty"`
	CIRuns      map[string]Interval `json:"ci95_bootstrap_runs_ns,omitempty"`
	CIOrderStat map[string]Interval `json:"ci95_order_stat_ns,omitempty"`

	Added *Added `json:"added_over_baseline,omitempty"`

	// Hops: the pooled per-hop histograms of the kept runs that have them.
	Hops     map[string]hist.Summary `json:"hops_pooled_ns,omitempty"`
	HopsRuns int                     `json:"hops_runs,omitempty"` // how many kept runs had hops

	Resources map[string]SourceResources `json:"resources,omitempty"`
	DataPlane *DataPlane                 `json:"data_plane,omitempty"`

	pooled *hdrhistogram.Histogram
	kept   []*hdrhistogram.Histogram
}

// Experiment is experiment.json.
type Experiment struct {
	Name        string      `json:"name"`
	Config      Config      `json:"config"`
	Environment Environment `json:"environment"`
	Started     time.Time   `json:"started"`
	Finished    time.Time   `json:"finished"`
	WallTimeNs  int64       `json:"wall_time_ns"`
	// Status: "complete", "interrupted" (Ctrl-C: what was measured is
	// here), or "stopped: <reason>".
	Status  string     `json:"status"`
	Skipped []Skip     `json:"skipped,omitempty"`
	Runs    []RunBrief `json:"runs"`
	Cells   []Cell     `json:"cells"`
	Notes   []string   `json:"notes,omitempty"`
}

// Cell returns the cell of scenario at rate, or nil.
func (e *Experiment) Cell(scenario string, rate int) *Cell {
	for i := range e.Cells {
		if e.Cells[i].Scenario == scenario && e.Cells[i].RateRPS == rate {
			return &e.Cells[i]
		}
	}
	return nil
}

// The client's own time, from joining the probe's timelines with the load
// generator's records: the write issued to the first packet seen, and the
// last packet seen to the first response byte read.
const (
	ClientSend = "client/send"
	ClientRecv = "client/recv"
)

// HopNames are the hops of DESIGN.md's hop model, in a request's order,
// between the client's own time at both ends.
var HopNames = []string{
	ClientSend,
	"client-proxy/out", "network/req", "server-proxy/in", "app",
	"server-proxy/out", "network/resp", "client-proxy/in",
	ClientRecv,
}
