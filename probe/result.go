package probe

import (
	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/hopscope/hopscope/hist"
)

// Result is what the probe measured in one window.
type Result struct {
	Mode string `json:"mode"`
	// Hops: per hop, the count and percentiles (ns).
	Hops  map[string]hist.Summary `json:"hops"`
	Probe Health                  `json:"probe"`
	// Expected lists the stages the attached targets can observe.
	Expected []string `json:"stages,omitempty"`

	// Hists are the hop histograms (for hops.hlog).
	Hists Hists `json:"-"`
	// Targets breaks the hops down by the target that owns the later end of
	// each hop (client-proxy/* and network/resp: the client; the rest: the
	// server), for per-pod metrics.
	Targets map[string]Hists `json:"-"`
	// Timelines of finished requests, when Config.KeepTimelines is set.
	Timelines []Timeline `json:"-"`
}

// Health is the probe's own account of what it saw and missed.
type Health struct {
	Mode    string `json:"mode"`
	Points  int    `json:"points"`  // observation points attached
	Packets uint64 `json:"packets"` // packets that ran the classifier
	Matched uint64 `json:"matched"` // segments of watched flows worth an event
	Emitted uint64 `json:"emitted"` // events submitted to the ring
	Events  uint64 `json:"events"`  // events read by userspace
	Drops   uint64 `json:"drops"`   // events lost in the kernel: the ring was full

	Requests    uint64 `json:"requests"`     // requests seen at every expected point
	Partial     uint64 `json:"partial"`      // requests seen at only some points (timed out)
	Pending     uint64 `json:"pending"`      // requests still in flight at the window's end
	Unmatched   uint64 `json:"unmatched"`    // responses with no outstanding request
	ParseErrors uint64 `json:"parse_errors"` // bytes where a message or frame should start but does not
	NoID        uint64 `json:"no_id"`        // requests without a readable ID
	Retransmits uint64 `json:"retransmits"`  // segments carrying data already seen
	Resets      uint64 `json:"resets"`       // connections or streams reset
	Negative    uint64 `json:"negative"`     // hops with a negative duration (skipped)
	BadEvents   uint64 `json:"bad_events"`   // undecodable ring records
	Error       string `json:"error,omitempty"`
}

func copyHist(h *hdrhistogram.Histogram) *hdrhistogram.Histogram {
	c := hist.New()
	c.Merge(h)
	return c
}
