package load

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"strings"
	"time"
)

// Config is one load run.
type Config struct {
	URL string // http://host:port/path[?query] or grpc://host:port

	Rate       float64 // requests per second, open loop; ignored when ClosedLoop
	ClosedLoop bool    // each connection sends its next request as soon as the last is answered

	Duration time.Duration // measured window
	Warmup   time.Duration // run before the window at the same rate; not counted
	Timeout  time.Duration // per request (and per connect)

	Connections    int // opened before the run
	MaxConnections int // the pool may grow to this when all are busy (<= Connections: fixed pool)

	Payload int // gRPC request payload bytes

	// Spin is how long before each due time the scheduler stops sleeping and
	// yields in a loop instead: less send lag, more CPU. 0 sleeps to the due
	// time (a timerfd wakes within tens of µs).
	Spin time.Duration

	// Procs is the GOMAXPROCS the CLI sets for the run; 0: AutoProcs. Run
	// itself leaves GOMAXPROCS alone (a library must not change it).
	Procs int

	Hlog    io.Writer // per-second interval histograms of latency (HdrHistogram log), or nil
	Records io.Writer // per-request records (reqid.RecordWriter), or nil
}

// ErrConfig marks a mistake in the Config (a usage error at the CLI).
var ErrConfig = errors.New("invalid load config")

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
}

// Target is a parsed load URL.
type Target struct {
	Protocol string // "http" or "grpc"
	Addr     string // host:port to dial
	Host     string // the Host header (HTTP)
	Path     string // path and query, without the request ID (HTTP)
}

// ParseURL checks a load URL: http://host:port/path or grpc://host:port.
func ParseURL(raw string) (Target, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return Target{}, configErr("URL %q: want http://HOST:PORT/PATH or grpc://HOST:PORT", raw)
	}
	var t Target
	switch u.Scheme {
	case "http":
		t.Protocol = "http"
	case "grpc":
		t.Protocol = "grpc"
	case "https", "grpcs":
		return Target{}, configErr("URL %q: TLS is not supported, use http:// or grpc://", raw)
	default:
		return Target{}, configErr("URL %q: scheme %q, want http or grpc", raw, u.Scheme)
	}
	if u.User != nil || u.Fragment != "" {
		return Target{}, configErr("URL %q: no user info or fragment, please", raw)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return Target{}, configErr("URL %q: no host", raw)
	}
	if port == "" {
		if t.Protocol == "grpc" {
			return Target{}, configErr("URL %q: give the port (grpc://HOST:PORT)", raw)
		}
		port = "80"
	}
	t.Addr = net.JoinHostPort(host, port)
	t.Host = u.Host
	if t.Protocol == "grpc" {
		if p := strings.Trim(u.Path, "/"); p != "" || u.RawQuery != "" {
			return Target{}, configErr("URL %q: a grpc URL has no path (the method is %s)", raw, "/hopscope.Echo/Call")
		}
		return t, nil
	}
	t.Path = u.EscapedPath()
	if t.Path == "" {
		t.Path = "/"
	}
	if u.RawQuery != "" {
		t.Path += "?" + u.RawQuery
	}
	return t, nil
}

// Check fills defaults and validates c.
func (c *Config) Check() (Target, error) {
	t, err := ParseURL(c.URL)
	if err != nil {
		return t, err
	}
	if !c.ClosedLoop && !(c.Rate > 0) {
		return t, configErr("rate %v: want a positive number of requests per second, or max", c.Rate)
	}
	if c.Rate > 1e7 {
		return t, configErr("rate %v: above 10M requests per second; use max for a closed loop", c.Rate)
	}
	if c.Duration <= 0 {
		return t, configErr("duration %v: want a positive duration like 30s", c.Duration)
	}
	if c.Warmup < 0 {
		return t, configErr("warmup %v: want 0 or a positive duration", c.Warmup)
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Connections <= 0 {
		return t, configErr("connections %d: want at least 1", c.Connections)
	}
	if c.MaxConnections < c.Connections {
		c.MaxConnections = c.Connections
	}
	if c.Payload < 0 {
		return t, configErr("payload %d: want 0 or more bytes", c.Payload)
	}
	if c.Spin < 0 {
		c.Spin = 0
	}
	return t, nil
}

// ProcsPerRate is how many requests per second one Go P carries in an open
// loop before AutoProcs adds another: one P drives 10,000 req/s on loopback
// here with send lag p99 under 100 µs, at about 40 µs of CPU per request.
const ProcsPerRate = 10000

// AutoProcs is the GOMAXPROCS an open loop at cfg.Rate runs best with:
// one P per ProcsPerRate requests per second, at most ncpu. With one P the
// thread that wakes from the timerfd runs the schedule itself; with more,
// the wake-up is often handed to another thread (a futex wake and, on a VM,
// an IPI to a halted vCPU), which doubled send lag p99 at 2000 req/s here
// and cost 10% more CPU. A closed loop keeps ncpu.
func AutoProcs(cfg Config, ncpu int) int {
	if cfg.ClosedLoop || cfg.Rate <= 0 {
		return ncpu
	}
	return max(1, min(ncpu, int(math.Ceil(cfg.Rate/ProcsPerRate))))
}
