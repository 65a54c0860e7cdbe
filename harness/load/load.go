package load

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hopscope/hopscope/clock"
	"github.com/hopscope/hopscope/harness/load/pace"
)

// job is one request.
type job struct {
	id       uint64
	due      int64 // CLOCK_MONOTONIC ns; in closed loop, the send time
	sent     int64
	measured bool // due inside the measured window
}

// conn is a pooled connection with at most one job outstanding.
type conn interface {
	current() *atomic.Pointer[job]
	launch(j *job) // send j (already current); may not block for long
	expire()       // the current job ran out of time
	kill()         // close; the reader or worker then exits
}

// gen is one run in progress.
type gen struct {
	cfg Config
	t   Target
	rec *recorder

	idBase    uint64
	measureAt int64 // start of the measured window (mono ns)
	endAt     atomic.Int64
	stopped   atomic.Bool // no new jobs (closed loop) / schedule over
	seq       atomic.Uint64
	opened    atomic.Int64

	mu       sync.Mutex
	idle     []conn
	all      map[conn]struct{}
	size     int // open + being dialled
	pending  []*job
	inflight int // jobs handed out and not finished
	drained  chan struct{}
	closing  bool
}

// Run drives cfg.URL as cfg says and returns what it measured. It returns
// early with what was measured so far when ctx is cancelled (Result.
// Interrupted). An error means nothing was measured: a bad Config (wrapping
// ErrConfig) or a target that cannot be reached at all.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	t, err := cfg.Check()
	if err != nil {
		return nil, err
	}
	g := &gen{cfg: cfg, t: t, all: map[conn]struct{}{}, drained: make(chan struct{})}
	g.idBase = rand.Uint64N(1<<24) << 40

	// The first connections are opened before the clock starts, one at a
	// time: a refused or unreachable target is reported at once.
	for i := 0; i < cfg.Connections; i++ {
		c, err := g.dial()
		if err != nil {
			g.closeAll()
			return nil, fmt.Errorf("connect to %s: %w", t.Addr, unwrapOp(err))
		}
		g.size++
		g.all[c] = struct{}{}
		g.idle = append(g.idle, c)
	}

	t0 := clock.Now() + int64(time.Millisecond)
	g.measureAt = t0 + int64(cfg.Warmup)
	g.endAt.Store(g.measureAt + int64(cfg.Duration))
	wall0 := time.Now().Add(time.Duration(g.measureAt - clock.Now()))
	g.rec, err = newRecorder(cfg, wall0, g.measureAt)
	if err != nil {
		g.closeAll()
		return nil, err
	}
	rotDone := make(chan struct{})
	rotStop := make(chan struct{})
	go g.rec.rotateEvery(rotStop, rotDone)
	sweepStop := make(chan struct{})
	go g.sweep(sweepStop)

	if cfg.ClosedLoop {
		g.closedLoop(ctx, t0)
	} else {
		g.schedule(ctx, t0)
	}
	interrupted := ctx.Err() != nil
	if interrupted {
		g.endAt.Store(min(g.endAt.Load(), clock.Now()))
	}
	g.stopped.Store(true)

	// Wait for what is in flight: the sweeper times it out after cfg.Timeout;
	// after Ctrl-C give it a moment only.
	grace := cfg.Timeout + time.Second
	if interrupted {
		grace = 200 * time.Millisecond
	}
	g.mu.Lock()
	if g.inflight == 0 && len(g.pending) == 0 {
		close(g.drained)
		g.closing = true
	}
	g.mu.Unlock()
	select {
	case <-g.drained:
	case <-time.After(grace):
	}
	g.rec.stop()
	close(sweepStop)
	close(rotStop)
	<-rotDone
	g.closeAll()

	res, err := g.result()
	if res != nil {
		res.Interrupted = interrupted
	}
	return res, err
}

func (g *gen) dial() (conn, error) {
	if g.t.Protocol == "grpc" {
		c, err := g.dialGRPC()
		if err != nil {
			return nil, err
		}
		g.opened.Add(1)
		return c, nil
	}
	c, err := g.dialHTTP()
	if err != nil {
		return nil, err
	}
	g.opened.Add(1)
	return c, nil
}

// schedule is the open loop: job i is due at t0 + i*period, sent when due
// whatever the state of earlier requests. It waits on a periodic timerfd
// (one read per request, no re-arming), Spin before each due time, then
// yields until the due time.
func (g *gen) schedule(ctx context.Context, t0 int64) {
	period := int64(math.Round(1e9 / g.cfg.Rate))
	spin := int64(g.cfg.Spin)
	tk, err := pace.NewTicker(t0-spin, period)
	if err != nil {
		tk = nil // fall back to time.Sleep (millisecond wake-ups)
	}
	stop := context.AfterFunc(ctx, func() {
		if tk != nil {
			tk.Close()
		}
	})
	defer func() {
		if stop() && tk != nil {
			tk.Close()
		}
	}()
	// Counted by index, not by comparing due times with the window's ends:
	// the period is whole nanoseconds, so the window holds round(R*D)
	// requests exactly, never one more from the rounding.
	nWarm, nTotal := g.counts()
	for i := uint64(0); i < nTotal; i++ {
		due := t0 + int64(i)*period
		if ctx.Err() != nil {
			return
		}
		if wake := due - spin; clock.Now() < wake {
			if tk == nil || tk.WaitUntil(wake) != nil {
				if ctx.Err() != nil {
					return
				}
				time.Sleep(time.Duration(wake - clock.Now()))
			}
		}
		for clock.Now() < due {
			runtime.Gosched()
		}
		if ctx.Err() != nil {
			return
		}
		g.seq.Store(i + 1)
		j := &job{id: g.idBase | i, due: due, measured: i >= nWarm}
		if j.measured {
			g.rec.issued()
		}
		g.dispatch(j)
	}
}

// counts are the open loop's warm-up and total number of requests.
func (g *gen) counts() (warm, total uint64) {
	warm = uint64(math.Round(g.cfg.Warmup.Seconds() * g.cfg.Rate))
	return warm, warm + uint64(math.Round(g.cfg.Duration.Seconds()*g.cfg.Rate))
}

// closedLoop starts one job per connection; each connection sends its next
// job as soon as its last one finished (release).
func (g *gen) closedLoop(ctx context.Context, t0 int64) {
	for clock.Now() < t0 {
		runtime.Gosched()
	}
	g.mu.Lock()
	idle := append([]conn(nil), g.idle...)
	g.idle = g.idle[:0]
	g.mu.Unlock()
	for _, c := range idle {
		g.mu.Lock()
		j := g.nextClosed()
		g.assign(c, j)
		g.mu.Unlock()
		c.launch(j)
	}
	select {
	case <-ctx.Done():
	case <-time.After(time.Duration(g.endAt.Load() - clock.Now())):
	}
}

// nextClosed makes the next closed-loop job, due now. g.mu held.
func (g *gen) nextClosed() *job {
	i := g.seq.Add(1) - 1
	now := clock.Now() // assign sets sent = due from this
	j := &job{id: g.idBase | i, due: now, sent: now, measured: now >= g.measureAt}
	if j.measured {
		g.rec.issued()
	}
	return j
}

// assign makes j c's current job. g.mu held.
func (g *gen) assign(c conn, j *job) {
	g.inflight++
	if !g.cfg.ClosedLoop {
		j.sent = clock.Now()
	}
	c.current().Store(j)
}

// dispatch hands a due job to an idle connection, or opens one more, or
// queues the job (delayed). Waiting jobs go first, oldest first.
func (g *gen) dispatch(j *job) {
	g.mu.Lock()
	if len(g.pending) == 0 && len(g.idle) > 0 {
		c := g.idle[len(g.idle)-1]
		g.idle = g.idle[:len(g.idle)-1]
		g.assign(c, j)
		g.mu.Unlock()
		c.launch(j)
		return
	}
	g.pending = append(g.pending, j)
	dj := g.growLocked()
	g.mu.Unlock()
	if dj != nil {
		if j.measured {
			g.rec.grew()
		}
		go g.dialFor(dj)
	} else if j.measured {
		g.rec.delayed()
	}
}

// growLocked takes the oldest waiting job for a new connection if the pool
// may grow (g.mu held); the caller then runs dialFor on it.
func (g *gen) growLocked() *job {
	if len(g.pending) == 0 || g.closing || g.size >= g.cfg.MaxConnections {
		return nil
	}
	j := g.pending[0]
	g.pending[0] = nil
	g.pending = g.pending[1:]
	g.size++
	g.inflight++ // counted while dialling so the drain waits for it
	return j
}

// dialFor opens a connection for j.
func (g *gen) dialFor(j *job) {
	c, err := g.dial()
	g.mu.Lock()
	g.inflight--
	if err != nil || g.closing {
		g.size--
		next := g.growLocked()
		g.mu.Unlock()
		if err == nil {
			c.kill()
		}
		msg := "connect: pool closing"
		if err != nil {
			msg = unwrapOp(err).Error()
		}
		g.rec.finish(j, 0, clock.Now(), 0, ClassConnect, msg)
		if next != nil {
			go g.dialFor(next)
		}
		g.settle()
		return
	}
	g.all[c] = struct{}{}
	g.assign(c, j)
	g.mu.Unlock()
	c.launch(j)
}

// release puts c back after its job finished: it takes the oldest waiting
// job, or the next closed-loop job, or goes idle.
func (g *gen) release(c conn) {
	g.mu.Lock()
	g.inflight--
	if g.closing {
		g.mu.Unlock()
		g.settle()
		return
	}
	var j *job
	switch {
	case len(g.pending) > 0:
		j = g.pending[0]
		g.pending[0] = nil
		g.pending = g.pending[1:]
	case g.cfg.ClosedLoop && !g.stopped.Load() && clock.Now() < g.endAt.Load():
		j = g.nextClosed()
	}
	if j == nil {
		g.idle = append(g.idle, c)
		g.mu.Unlock()
		g.settle()
		return
	}
	g.assign(c, j)
	g.mu.Unlock()
	c.launch(j)
}

// settle closes drained once the run is over and nothing is left.
func (g *gen) settle() {
	if !g.stopped.Load() {
		return
	}
	g.mu.Lock()
	if !g.closing && g.inflight == 0 && len(g.pending) == 0 {
		g.closing = true
		close(g.drained)
	}
	g.mu.Unlock()
}

// connDied removes a broken or closed connection, finishing its job (if
// any) with the error. at is when the failure was seen.
func (g *gen) connDied(c conn, at int64, class string, err error) {
	g.mu.Lock()
	j := c.current().Swap(nil)
	delete(g.all, c)
	for i, ic := range g.idle {
		if ic == c {
			g.idle = append(g.idle[:i], g.idle[i+1:]...)
			break
		}
	}
	g.size--
	if j != nil {
		g.inflight--
	}
	// Waiting jobs lost a connection that would have served them.
	redial := g.growLocked()
	g.mu.Unlock()
	c.kill()
	if j != nil {
		if class == "" {
			class = ClassRead
		}
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		g.rec.finish(j, 0, at, 0, class, msg)
	}
	if redial != nil {
		go g.dialFor(redial)
	}
	g.settle()
}

func (g *gen) finish(j *job, first, done int64, status int, class, msg string) {
	g.rec.finish(j, first, done, status, class, msg)
}

// sweep times out HTTP requests in flight for longer than cfg.Timeout, and
// requests of either protocol that waited that long for a connection (gRPC
// calls carry their own deadline).
// A sweep every Timeout/20 (1 ms..100 ms) keeps the hot path free of
// per-request deadline timers.
func (g *gen) sweep(stop <-chan struct{}) {
	every := min(max(g.cfg.Timeout/20, time.Millisecond), 100*time.Millisecond)
	tk := time.NewTicker(every)
	defer tk.Stop()
	var expired []conn
	var waited []*job
	for {
		select {
		case <-stop:
			return
		case <-tk.C:
		}
		now := clock.Now()
		expired = expired[:0]
		waited = waited[:0]
		g.mu.Lock()
		for len(g.pending) > 0 && now-g.pending[0].due > int64(g.cfg.Timeout) {
			waited = append(waited, g.pending[0])
			g.pending[0] = nil
			g.pending = g.pending[1:]
		}
		if g.t.Protocol == "http" {
			for c := range g.all {
				if j := c.current().Load(); j != nil && now-j.sent > int64(g.cfg.Timeout) {
					expired = append(expired, c)
				}
			}
		}
		g.mu.Unlock()
		for _, c := range expired {
			c.expire()
		}
		for _, j := range waited {
			g.rec.finish(j, 0, now, 0, ClassTimeout, "timeout: no free connection")
		}
		if len(waited) > 0 {
			g.settle()
		}
	}
}

func (g *gen) closeAll() {
	g.mu.Lock()
	g.closing = true
	all := make([]conn, 0, len(g.all)+len(g.idle))
	for c := range g.all {
		all = append(all, c)
	}
	for _, c := range g.idle {
		if _, ok := g.all[c]; !ok {
			all = append(all, c)
		}
	}
	g.all = map[conn]struct{}{}
	g.idle = nil
	g.mu.Unlock()
	for _, c := range all {
		c.kill()
	}
}
