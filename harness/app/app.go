package app

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/hopscope/hopscope/clock"
	"github.com/hopscope/hopscope/harness/load/pace"
	"github.com/hopscope/hopscope/reqid"
)

// Config is what `hopscope app` serves.
type Config struct {
	Listen     string // HTTP/1.1 address, e.g. 127.0.0.1:8080 ("" for none)
	GRPCListen string // gRPC h2c address ("" for none)
	Delay      Delay  // service time added before each answer
	Size       int    // response body bytes (at least the ID line; gRPC: payload bytes)
	Stamps     string // file for per-request "id,recv_ns,send_ns" ("" for none)

	// OnListen, if set, is called once both listeners are open (nil for the
	// one not asked for): useful with port 0.
	OnListen func(http, grpc net.Addr)
}

// IDHeader carries the request ID back in every HTTP response.
const IDHeader = "X-Hopscope-Id"

// Serve runs the app until ctx is done, then stops the servers, writes out
// the stamps and returns nil; it returns an error if a listener cannot be
// opened or a server fails.
func Serve(ctx context.Context, cfg Config) error {
	if cfg.Listen == "" && cfg.GRPCListen == "" {
		return errors.New("app: nothing to serve: give an HTTP or a gRPC listen address")
	}
	s := &server{cfg: cfg}
	if cfg.Stamps != "" {
		f, err := os.Create(cfg.Stamps)
		if err != nil {
			return fmt.Errorf("app: stamps file: %w", err)
		}
		defer f.Close()
		s.stamps = bufio.NewWriterSize(f, 64<<10)
		s.stamps.WriteString(StampHeader + "\n")
	}
	var hl, gl net.Listener
	var err error
	if cfg.Listen != "" {
		if hl, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("app: listen http: %w", err)
		}
	}
	if cfg.GRPCListen != "" {
		if gl, err = net.Listen("tcp", cfg.GRPCListen); err != nil {
			if hl != nil {
				hl.Close()
			}
			return fmt.Errorf("app: listen grpc: %w", err)
		}
	}
	if cfg.OnListen != nil {
		var ha, ga net.Addr
		if hl != nil {
			ha = hl.Addr()
		}
		if gl != nil {
			ga = gl.Addr()
		}
		cfg.OnListen(ha, ga)
	}

	errc := make(chan error, 2)
	var hs *http.Server
	if hl != nil {
		hs = &http.Server{Handler: s, ReadHeaderTimeout: time.Minute, IdleTimeout: 10 * time.Minute}
		go func() { errc <- hs.Serve(hl) }()
	}
	var gs *grpc.Server
	if gl != nil {
		gs = grpc.NewServer()
		gs.RegisterService(&EchoServiceDesc, s)
		go func() { errc <- gs.Serve(gl) }()
	}
	flushDone := make(chan struct{})
	stopFlush := make(chan struct{})
	go s.flushEvery(time.Second, stopFlush, flushDone)

	var serr error
	select {
	case <-ctx.Done():
	case serr = <-errc:
	}
	if hs != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		hs.Shutdown(sctx)
		cancel()
	}
	if gs != nil {
		gs.Stop()
	}
	close(stopFlush)
	<-flushDone
	if err := s.flush(); err != nil && serr == nil {
		serr = fmt.Errorf("app: write stamps: %w", err)
	}
	if errors.Is(serr, http.ErrServerClosed) || errors.Is(serr, grpc.ErrServerStopped) {
		serr = nil
	}
	return serr
}

type server struct {
	cfg Config

	mu     sync.Mutex
	stamps *bufio.Writer
	line   []byte

	tmu    sync.Mutex
	timers []*pace.Timer
}

// wait sleeps for one sample of the configured delay, precisely: time.Sleep
// rounds sub-millisecond waits up to a millisecond.
func (s *server) wait(from int64) {
	if s.cfg.Delay.IsZero() {
		return
	}
	d := s.cfg.Delay.Sample()
	if d <= 0 {
		return
	}
	s.tmu.Lock()
	var t *pace.Timer
	if n := len(s.timers); n > 0 {
		t, s.timers = s.timers[n-1], s.timers[:n-1]
	}
	s.tmu.Unlock()
	if t == nil {
		var err error
		if t, err = pace.NewTimer(); err != nil {
			time.Sleep(d)
			return
		}
	}
	if err := t.SleepUntil(from + int64(d)); err != nil {
		time.Sleep(time.Duration(from + int64(d) - clock.Now()))
	}
	s.tmu.Lock()
	s.timers = append(s.timers, t)
	s.tmu.Unlock()
}

func (s *server) stamp(id uint64, recv, send int64) {
	if s.stamps == nil {
		return
	}
	s.mu.Lock()
	b := append(reqid.AppendFields(s.line[:0], id, recv, send), '\n')
	s.stamps.Write(b)
	s.line = b
	s.mu.Unlock()
}

func (s *server) flush() error {
	if s.stamps == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stamps.Flush()
}

func (s *server) flushEvery(d time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			s.flush()
		}
	}
}

// body is the ID line ("hsid=..." and a newline, or "-" without an ID)
// padded with 'x' up to the configured size.
func (s *server) body(id uint64, ok bool) []byte {
	b := make([]byte, 0, max(s.cfg.Size, reqid.Len+1))
	if ok {
		b = reqid.Append(b, id)
	} else {
		b = append(b, '-')
	}
	b = append(b, '\n')
	for len(b) < s.cfg.Size {
		b = append(b, 'x')
	}
	return b
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	recv := clock.Now()
	id, ok := reqid.Find([]byte(r.URL.RawQuery))
	s.wait(recv)
	body := s.body(id, ok)
	h := w.Header()
	if ok {
		h[IDHeader] = []string{reqid.String(id)}
	}
	h["Content-Type"] = []string{"text/plain"}
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	send := clock.Now()
	w.Write(body)
	if ok {
		s.stamp(id, recv, send)
	}
}

// Call is the gRPC echo: recv is when the decoded request reaches the
// handler, send when the handler hands its response back to gRPC.
func (s *server) Call(ctx context.Context, req *Message) (*Message, error) {
	recv := clock.Now()
	id, ok := reqid.Find([]byte(req.ID))
	s.wait(recv)
	resp := &Message{ID: req.ID, Payload: make([]byte, s.cfg.Size)}
	if ok {
		s.stamp(id, recv, clock.Now())
	}
	return resp, nil
}

// Stamp is one line of the stamps file.
type Stamp struct {
	ID   uint64
	Recv int64 // CLOCK_MONOTONIC ns: the request was fully read
	Send int64 // CLOCK_MONOTONIC ns: the response write was called
}

// StampHeader is the first line of a stamps file.
const StampHeader = "id,recv_ns,send_ns"

// ReadStamps reads a stamps file written by the app.
func ReadStamps(r io.Reader) ([]Stamp, error) {
	var out []Stamp
	_, err := reqid.ScanFields(r, "stamps file", StampHeader, 3, func(id uint64, f []string) error {
		st := Stamp{ID: id}
		if err := reqid.ParseInts(f, &st.Recv, &st.Send); err != nil {
			return err
		}
		out = append(out, st)
		return nil
	})
	return out, err
}
