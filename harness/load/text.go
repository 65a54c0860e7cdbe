package load

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/hopscope/hopscope/hist"
)

// WriteText prints r as a short table a person reads at a glance, in the
// manner of wrk2: the percentiles of latency, service time and send lag, the
// requested against the achieved rate, and the errors by class.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	mode := fmt.Sprintf("open loop at %g req/s", r.RequestedRPS)
	if r.ClosedLoop {
		mode = "closed loop (max rate)"
	}
	fmt.Fprintf(&b, "%s: %s, %d connections (max %d), %v measured after %v warm-up%s\n",
		r.URL, mode, r.Connections, r.MaxConnections, time.Duration(r.DurationNs).Round(time.Millisecond),
		time.Duration(r.WarmupNs), map[bool]string{true: ", INTERRUPTED", false: ""}[r.Interrupted])
	fmt.Fprintf(&b, "  %-13s", "ms")
	for _, k := range append(hist.Keys, "mean") {
		fmt.Fprintf(&b, "%9s", k)
	}
	b.WriteByte('\n')
	row := func(name string, s hist.Summary) {
		fmt.Fprintf(&b, "  %-13s", name)
		if s.Count == 0 {
			b.WriteString("        -\n")
			return
		}
		for _, k := range hist.Keys {
			v, _ := s.At(k)
			fmt.Fprintf(&b, "%9.3f", float64(v)/1e6)
		}
		fmt.Fprintf(&b, "%9.3f\n", s.Mean/1e6)
	}
	row("latency", r.Latency)
	row("service time", r.ServiceTime)
	if !r.ClosedLoop {
		row("send lag", r.SendLag)
	}
	fmt.Fprintf(&b, "  requests %d in %.2fs: ", r.Requests, float64(r.DurationNs)/1e9)
	if r.ClosedLoop {
		fmt.Fprintf(&b, "achieved %.1f req/s\n", r.AchievedRPS)
	} else {
		fmt.Fprintf(&b, "target %.1f req/s, achieved %.1f req/s (%+.2f%%)\n", r.RequestedRPS, r.AchievedRPS,
			100*(r.AchievedRPS-r.RequestedRPS)/r.RequestedRPS)
	}
	fmt.Fprintf(&b, "  errors %d", r.Errors)
	if r.Errors > 0 {
		fmt.Fprintf(&b, " (%s)", kv(r.ErrorsByClass))
	}
	fmt.Fprintf(&b, ", timeouts %d; responses: %s\n", r.Timeouts, kv(r.StatusCodes))
	fmt.Fprintf(&b, "  connections opened %d; when all were busy: ", r.ConnectionsOpened)
	switch r.DelayMode {
	case "":
		b.WriteString("never\n")
	default:
		fmt.Fprintf(&b, "grew the pool %d times, delayed %d requests\n", r.ConnectionsGrown, r.Delayed)
	}
	if r.Unfinished > 0 {
		fmt.Fprintf(&b, "  unfinished %d (still in flight when the run stopped)\n", r.Unfinished)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func kv(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// unwrapOp shortens a net.OpError to its cause ("connect: connection
// refused"), the part a person acts on.
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		var sc *os.SyscallError
		if errors.As(op.Err, &sc) {
			return sc
		}
		return op.Err
	}
	return err
}
