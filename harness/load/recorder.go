package load

import (
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/hopscope/hopscope/hist"
	"github.com/hopscope/hopscope/reqid"
)

// recorder counts finished requests into histograms, the per-second .hlog
// and the record stream. One mutex: the critical section is a few
// histogram increments, cheaper than a channel hop per request.
type recorder struct {
	closed bool
	wall0  time.Time // wall clock at mono0
	mono0  int64     // start of the measured window

	issuedN, grewN, delayedN atomic.Int64

	mu         sync.Mutex
	final      bool
	ilat       *hdrhistogram.Histogram // latency, current interval
	svc, lag   *hdrhistogram.Histogram
	finishedN  int64
	ok, errs   int64
	byClass    map[string]int64
	status     [1200]int64 // HTTP status, gRPC 1000+code
	lastDone   int64
	clamped    int64
	rw         *reqid.RecordWriter
	rwErr      error
	rotateFrom int64

	// Owned by the rotating goroutine (then by result).
	tlat  *hdrhistogram.Histogram // latency, merged intervals
	spare *hdrhistogram.Histogram
	hl    *hist.LogWriter
	hlErr error
}

func newRecorder(cfg Config, wall0 time.Time, mono0 int64) (*recorder, error) {
	r := &recorder{
		closed: cfg.ClosedLoop, wall0: wall0, mono0: mono0,
		ilat: hist.New(), svc: hist.New(), lag: hist.New(), tlat: hist.New(), spare: hist.New(),
		byClass: map[string]int64{}, rotateFrom: mono0,
	}
	if cfg.Records != nil {
		rw, err := reqid.NewRecordWriter(cfg.Records)
		if err != nil {
			return nil, fmt.Errorf("records: %w", err)
		}
		r.rw = rw
	}
	if cfg.Hlog != nil {
		mode := fmt.Sprintf("rate %g/s", cfg.Rate)
		if cfg.ClosedLoop {
			mode = "closed loop"
		}
		hl, err := hist.NewLogWriter(cfg.Hlog, wall0,
			fmt.Sprintf("hopscope load %s, %s, corrected latency in ns", cfg.URL, mode))
		if err != nil {
			return nil, err
		}
		r.hl = hl
	}
	return r, nil
}

func (r *recorder) issued()  { r.issuedN.Add(1) }
func (r *recorder) grew()    { r.grewN.Add(1) }
func (r *recorder) delayed() { r.delayedN.Add(1) }

func (r *recorder) wall(mono int64) time.Time { return r.wall0.Add(time.Duration(mono - r.mono0)) }

// finish counts one request. class "" means a response arrived; a status
// outside 2xx (gRPC: not OK) then counts as a status error. Only requests
// with a response enter the histograms.
func (r *recorder) finish(j *job, first, done int64, status int, class, msg string) {
	if !j.measured {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.final {
		return
	}
	r.finishedN++
	if done > r.lastDone {
		r.lastDone = done
	}
	if status > 0 && status < len(r.status) {
		r.status[status]++
	}
	if class == "" {
		if status/100 == 2 || status == 1000 {
			r.ok++
		} else {
			class = ClassStatus
		}
		if hist.Record(r.ilat, done-j.due) {
			r.clamped++
		}
		if !r.closed { // closed loop: due = sent, the service time is the latency
			hist.Record(r.svc, done-j.sent)
			hist.Record(r.lag, j.sent-j.due)
		}
	}
	if class != "" {
		r.errs++
		r.byClass[class]++
	}
	if r.rw != nil && r.rwErr == nil {
		r.rwErr = r.rw.Write(reqid.Record{ID: j.id, Due: j.due, Sent: j.sent, FirstByte: first, Done: done, Status: status, Err: msg})
	}
}

// stop ends counting: anything finishing later is unfinished.
func (r *recorder) stop() {
	r.mu.Lock()
	r.final = true
	r.mu.Unlock()
}

// rotateEvery writes one latency interval per second of the measured
// window to the .hlog, and the last, partial one when stopped.
func (r *recorder) rotateEvery(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for k := int64(1); ; k++ {
		at := r.mono0 + k*int64(time.Second)
		select {
		case <-stop:
			r.rotate(0)
			return
		case <-time.After(time.Until(r.wall(at))):
			r.rotate(at)
		}
	}
}

// rotate closes the current interval at mono time to (0: now, final).
func (r *recorder) rotate(to int64) {
	r.mu.Lock()
	from := r.rotateFrom
	if to == 0 {
		to = max(r.lastDone, from)
	}
	h := r.ilat
	r.ilat, r.spare = r.spare, nil
	r.rotateFrom = to
	r.mu.Unlock()
	if to > r.mono0 || h.TotalCount() > 0 {
		if r.hl != nil && r.hlErr == nil {
			r.hlErr = r.hl.Interval(h, "", r.wall(from), r.wall(to))
		}
	}
	r.tlat.Merge(h)
	h.Reset()
	r.spare = h
}

func (g *gen) result() (*Result, error) {
	r := g.rec
	if g.cfg.ClosedLoop {
		r.svc = hdrhistogram.Import(r.tlat.Export())
	}
	end := g.endAt.Load()
	window := max(end-g.measureAt, 0)
	stretched := window
	if r.lastDone > end {
		stretched = r.lastDone - g.measureAt
	}
	res := &Result{
		URL: g.cfg.URL, Protocol: g.t.Protocol, ClosedLoop: g.cfg.ClosedLoop,
		Requests: r.finishedN, OK: r.ok, Errors: r.errs, Timeouts: r.byClass[ClassTimeout],
		ErrorsByClass: r.byClass, StatusCodes: map[string]int64{},
		Unfinished:  r.issuedN.Load() - r.finishedN,
		Connections: g.cfg.Connections, MaxConnections: g.cfg.MaxConnections,
		ConnectionsOpened: g.opened.Load(), ConnectionsGrown: r.grewN.Load(), Delayed: r.delayedN.Load(),
		WarmupNs: int64(g.cfg.Warmup), DurationNs: window,
		Start: r.wall0, StartMonoNs: g.measureAt,
		Clamped: r.clamped, Procs: runtime.GOMAXPROCS(0),
		Latency: hist.Summarize(r.tlat), ServiceTime: hist.Summarize(r.svc), SendLag: hist.Summarize(r.lag),
		LatencyHist: hist.Encoded{H: r.tlat}, ServiceTimeHist: hist.Encoded{H: r.svc},
	}
	if !g.cfg.ClosedLoop {
		res.RequestedRPS = g.cfg.Rate
		nWarm, _ := g.counts()
		res.FirstID = g.idBase | nWarm
	}
	if stretched > 0 {
		res.AchievedRPS = float64(r.finishedN) / (float64(stretched) / 1e9)
	}
	for code, n := range r.status {
		if n == 0 {
			continue
		}
		key := strconv.Itoa(code)
		if g.t.Protocol == "grpc" {
			key = grpcStatusKey(code)
		}
		res.StatusCodes[key] += n
	}
	switch {
	case res.ConnectionsGrown > 0 && res.Delayed > 0:
		res.DelayMode = "grow+delay"
	case res.ConnectionsGrown > 0:
		res.DelayMode = "grow"
	case res.Delayed > 0:
		res.DelayMode = "delay"
	}
	var err error
	if r.rw != nil {
		if ferr := r.rw.Flush(); r.rwErr == nil {
			r.rwErr = ferr
		}
		if r.rwErr != nil {
			err = fmt.Errorf("write records: %w", r.rwErr)
		}
	}
	if r.hlErr != nil && err == nil {
		err = r.hlErr
	}
	return res, err
}
