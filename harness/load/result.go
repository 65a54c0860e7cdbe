package load

import (
	"time"

	"github.com/hopscope/hopscope/hist"
)

// Error classes of Result.ErrorsByClass.
const (
	ClassConnect  = "connect"  // the connection could not be opened
	ClassTimeout  = "timeout"  // no complete response within Config.Timeout
	ClassStatus   = "status"   // a response arrived with a non-2xx status (gRPC: a non-OK code)
	ClassWrite    = "write"    // writing the request failed
	ClassRead     = "read"     // the connection broke before the response was complete
	ClassProtocol = "protocol" // the response was not well-formed HTTP/1.1
)

// Result is what one run measured; it is also the --json document. All times
// are nanoseconds. Only requests due inside the measured window (after the
// warm-up) are counted.
type Result struct {
	URL        string `json:"url"`
	Protocol   string `json:"protocol"`    // "http" or "grpc"
	ClosedLoop bool   `json:"closed_loop"` // --rate max: each connection sends as soon as its last response is in

	RequestedRPS float64 `json:"requested_rps"` // 0 in closed loop
	AchievedRPS  float64 `json:"achieved_rps"`  // requests / (measured window stretched to the last completion)

	Requests      int64            `json:"requests"` // completed, successfully or not
	OK            int64            `json:"ok"`
	Errors        int64            `json:"errors"`   // every failed request, timeouts included
	Timeouts      int64            `json:"timeouts"` // = ErrorsByClass["timeout"]
	ErrorsByClass map[string]int64 `json:"errors_by_class"`
	StatusCodes   map[string]int64 `json:"status_codes"` // HTTP status (gRPC: "grpc-<code>") of every response
	Unfinished    int64            `json:"unfinished"`   // due in the window but not completed when the run stopped (Ctrl-C)

	// The connection pool. When every connection was busy at a due time the
	// pool opened another (ConnectionsGrown) while below MaxConnections, and
	// beyond that the request waited for a free connection (Delayed); its
	// latency still counts from its due time.
	Connections       int    `json:"connections"`
	MaxConnections    int    `json:"max_connections"`
	ConnectionsOpened int64  `json:"connections_opened"`
	ConnectionsGrown  int64  `json:"connections_grown"`
	Delayed           int64  `json:"delayed"`
	DelayMode         string `json:"delay_mode"` // "grow", "delay" or "grow+delay": which of the two happened ("" if neither)

	WarmupNs    int64     `json:"warmup_ns"`
	DurationNs  int64     `json:"duration_ns"`   // the measured window as it ran (shorter after Ctrl-C)
	Start       time.Time `json:"start"`         // wall clock at the start of the measured window
	StartMonoNs int64     `json:"start_mono_ns"` // the same instant, CLOCK_MONOTONIC
	Interrupted bool      `json:"interrupted"`
	FirstID     uint64    `json:"first_id"` // open loop: ID of the first measured request; IDs rise by one per request (0 in closed loop)
	Clamped     int64     `json:"clamped"`  // values outside 1 µs..60 s, counted at the edge
	Procs       int       `json:"procs"`    // GOMAXPROCS during the run (see AutoProcs)

	Latency     hist.Summary `json:"latency_ns"`      // from due time to the last byte of the response
	ServiceTime hist.Summary `json:"service_time_ns"` // from the actual send to the last byte
	SendLag     hist.Summary `json:"send_lag_ns"`     // actual send minus due (empty in closed loop)

	LatencyHist     hist.Encoded `json:"latency_hist"`      // corrected latency, for pooling runs
	ServiceTimeHist hist.Encoded `json:"service_time_hist"` // service time
}
