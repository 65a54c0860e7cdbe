package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/hopscope/hopscope/clock"
	"github.com/hopscope/hopscope/harness/load/pace"
	"github.com/hopscope/hopscope/reqid"
)

// Config is one proxy instance.
type Config struct {
	Listen   string        // host:port to accept on
	Upstream string        // host:port to forward to
	Delay    time.Duration // added to every request before it goes upstream
	Stamps   string        // file for per-request stamps ("" for none)
	H2C      bool          // HTTP/2 cleartext (gRPC) instead of HTTP/1.1

	// Listener, if set, is used instead of listening on Listen (a test may
	// open it inside a network namespace).
	Listener net.Listener
	// OnListen, if set, is called with the listening address.
	OnListen func(net.Addr)
}

func (c Config) check() error {
	if c.Listen == "" && c.Listener == nil {
		return errors.New("proxy: no listen address: give --listen HOST:PORT")
	}
	if _, _, err := net.SplitHostPort(c.Upstream); err != nil {
		return fmt.Errorf("proxy: upstream %q: want HOST:PORT", c.Upstream)
	}
	if c.Delay < 0 {
		return fmt.Errorf("proxy: delay %v: want a duration >= 0", c.Delay)
	}
	return nil
}

// Serve runs the proxy until ctx is done, then closes its connections,
// writes out the stamps and returns nil. It returns an error at once if it
// cannot listen or open the stamps file.
func Serve(ctx context.Context, cfg Config) error {
	if err := cfg.check(); err != nil {
		return err
	}
	var sw *stampWriter
	if cfg.Stamps != "" {
		f, err := os.Create(cfg.Stamps)
		if err != nil {
			return fmt.Errorf("proxy: stamps file: %w", err)
		}
		defer f.Close()
		sw = newStampWriter(f)
		defer sw.flush()
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("proxy: listen on %s: %w (is another process using the port?)", cfg.Listen, err)
		}
	}
	if sw != nil && !cfg.H2C {
		// The kernel turns receive stamps on for everyone through deferred
		// work the first time a socket asks: ask now, on the listener, so
		// that it is done before the first request comes in.
		_, _ = enableKStamps(ln) // without them the K columns are 0
	}
	if cfg.OnListen != nil {
		cfg.OnListen(ln.Addr())
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				sw.flush()
			case <-stop:
				return
			}
		}
	}()
	if cfg.H2C {
		return serveH2C(ctx, cfg, ln, sw)
	}
	return serveHTTP1(ctx, cfg, ln, sw)
}

func serveHTTP1(ctx context.Context, cfg Config, ln net.Listener, sw *stampWriter) error {
	var (
		mu    sync.Mutex
		conns = map[net.Conn]bool{}
		wg    sync.WaitGroup
	)
	go func() {
		<-ctx.Done()
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	track := func(c net.Conn, add bool) {
		mu.Lock()
		if add {
			conns[c] = true
		} else {
			delete(conns, c)
		}
		mu.Unlock()
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				wg.Wait()
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			wg.Wait()
			return fmt.Errorf("proxy: accept: %w", err)
		}
		track(c, true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer track(c, false)
			defer c.Close()
			s := &session{cfg: cfg, down: c, stamps: sw, track: track}
			if sw != nil {
				s.downK, _ = enableKStamps(c) // without them the columns are 0
			}
			s.run(ctx)
		}()
	}
}

// session is one downstream connection and its upstream connection.
type session struct {
	cfg    Config
	down   net.Conn
	up     net.Conn
	upr    *msgReader
	stamps *stampWriter
	// kernel socket stamps (nil: off or unavailable)
	downK, upK *kstamps
	timer      *pace.Timer
	track      func(net.Conn, bool)
}

func (s *session) closeUp() {
	if s.up != nil {
		s.track(s.up, false)
		s.up.Close()
		s.up, s.upr = nil, nil
	}
}

func (s *session) dialUp(ctx context.Context) error {
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", s.cfg.Upstream)
	if err != nil {
		return err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	s.track(c, true)
	s.upK = nil
	if s.stamps != nil {
		s.upK, _ = enableKStamps(c)
	}
	s.up, s.upr = c, newMsgReader(c, s.upK)
	return nil
}

func (s *session) run(ctx context.Context) {
	defer s.closeUp()
	defer func() {
		if s.timer != nil {
			s.timer.Close()
		}
	}()
	down := newMsgReader(s.down, s.downK)
	for {
		req, rh, reqRead, err := down.next(false, false)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.fail(err)
			}
			return
		}
		st := Stamp{ReqRead: reqRead, KReqRx: down.kat}
		id, hasID := reqid.Find(rh.first)
		st.ID = id
		if s.cfg.Delay > 0 {
			s.sleepUntil(reqRead + int64(s.cfg.Delay))
		}
		resp, ph, err := s.exchange(ctx, req, rh.isHead, &st)
		if err != nil {
			s.fail(err)
			return
		}
		st.RespWrite = clock.Now()
		if _, err := s.down.Write(resp); err != nil {
			return
		}
		if s.downK != nil {
			st.KRespTx = s.downK.await(s.downK.wrote(len(resp)))
		}
		if hasID {
			s.stamps.write(st)
		}
		if rh.close || ph.close || ph.untilDone {
			return
		}
	}
}

// exchange sends one request upstream and reads its response, redialling
// once if a kept-alive upstream connection turns out to be closed before any
// byte of the response came back.
func (s *session) exchange(ctx context.Context, req []byte, isHead bool, st *Stamp) ([]byte, head, error) {
	for attempt := 0; ; attempt++ {
		fresh := s.up == nil
		if fresh {
			if err := s.dialUp(ctx); err != nil {
				return nil, head{}, fmt.Errorf("upstream %s: %w", s.cfg.Upstream, err)
			}
		}
		st.ReqWrite = clock.Now()
		_, err := s.up.Write(req)
		var resp []byte
		var ph head
		if err == nil {
			var key uint32
			if s.upK != nil {
				key = s.upK.wrote(len(req))
				st.KReqTx = s.upK.tx(key)
			}
			for {
				resp, ph, st.RespRead, err = s.upr.next(true, isHead)
				if err != nil || ph.status/100 != 1 || ph.status == 101 {
					break
				}
				// An interim response (100 Continue) goes down as is.
				if n, _ := s.down.Write(resp); s.downK != nil {
					s.downK.wrote(n)
				}
			}
			st.KRespRx = s.upr.kat
			if s.upK != nil && st.KReqTx == 0 {
				st.KReqTx = s.upK.tx(key) // sent after the write returned
			}
		}
		if err == nil {
			if ph.close || ph.untilDone {
				// Keep the bytes: closing drops nothing already read.
				out := append([]byte(nil), resp...)
				s.closeUp()
				return out, ph, nil
			}
			return resp, ph, nil
		}
		s.closeUp()
		if fresh || attempt > 0 || !(errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err)) {
			return nil, head{}, fmt.Errorf("upstream %s: %w", s.cfg.Upstream, err)
		}
	}
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}

// fail answers 502 (the request could not be forwarded) and logs why.
func (s *session) fail(err error) {
	msg := err.Error()
	fmt.Fprintf(os.Stderr, "hopscope proxy: %s: %v\n", s.down.RemoteAddr(), msg)
	fmt.Fprintf(s.down, "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(msg)+1, msg+"\n")
}

// delaySpin is how long before the end of a delay the proxy stops sleeping
// and spins: a timer wakes a thread tens of µs late on a VM (the delay then
// came out 1.04 to 1.07 ms for 1 ms), a spin does not.
const delaySpin = 150 * time.Microsecond

// sleepUntil waits for the CLOCK_MONOTONIC instant at with microsecond
// precision: a timerfd sleep (time.Sleep alone can overshoot by a
// millisecond) to delaySpin before it, then a spin.
func (s *session) sleepUntil(at int64) {
	if wake := at - int64(delaySpin); clock.Now() < wake {
		if s.timer == nil {
			if t, err := pace.NewTimer(); err == nil {
				s.timer = t
			}
		}
		if s.timer == nil || s.timer.SleepUntil(wake) != nil {
			time.Sleep(time.Duration(wake - clock.Now()))
		}
	}
	for clock.Now() < at {
		runtime.Gosched()
	}
}
