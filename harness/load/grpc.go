package load

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/hopscope/hopscope/clock"
	"github.com/hopscope/hopscope/harness/app"
	"github.com/hopscope/hopscope/reqid"
)

// grpcConn is one gRPC client connection (one HTTP/2 connection over h2c)
// to the app's echo service, used like an HTTP/1.1 connection: one request
// outstanding at a time, so --connections means the same for both. A call
// blocks, so each connection has a worker goroutine.
type grpcConn struct {
	g    *gen
	cc   *grpc.ClientConn
	jobs chan *job
	cur  atomic.Pointer[job]
	opts []grpc.CallOption

	mu     sync.Mutex
	killed bool
}

func (g *gen) dialGRPC() (*grpcConn, error) {
	cc, err := grpc.NewClient("passthrough:///"+g.t.Addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(g.t.Host))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.Timeout)
	defer cancel()
	cc.Connect()
	for {
		s := cc.GetState()
		if s == connectivity.Ready {
			break
		}
		if s == connectivity.TransientFailure {
			cc.Close()
			return nil, fmt.Errorf("dial %s: connection failed (is a gRPC server listening there?)", g.t.Addr)
		}
		if !cc.WaitForStateChange(ctx, s) {
			cc.Close()
			return nil, fmt.Errorf("dial %s: not ready after %v", g.t.Addr, g.cfg.Timeout)
		}
	}
	c := &grpcConn{g: g, cc: cc, jobs: make(chan *job, 1), opts: app.CallOptions()}
	go c.work()
	return c, nil
}

func (c *grpcConn) current() *atomic.Pointer[job] { return &c.cur }
func (c *grpcConn) launch(j *job) {
	c.mu.Lock()
	if !c.killed {
		c.jobs <- j // never blocks: one job at a time
	}
	c.mu.Unlock()
}
func (c *grpcConn) expire() {} // calls carry their own deadline
func (c *grpcConn) kill() {
	c.mu.Lock()
	if !c.killed {
		c.killed = true
		close(c.jobs)
	}
	c.mu.Unlock()
}

func (c *grpcConn) work() {
	defer c.cc.Close()
	idb := make([]byte, 0, reqid.Len)
	payload := make([]byte, c.g.cfg.Payload)
	for j := range c.jobs {
		req := &app.Message{ID: string(reqid.Append(idb[:0], j.id)), Payload: payload}
		resp := new(app.Message)
		j.sent = clock.Now()
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(c.g.cfg.Timeout))
		err := c.cc.Invoke(ctx, app.EchoMethod, req, resp, c.opts...)
		cancel()
		done := clock.Now()
		c.cur.Store(nil)
		if err == nil {
			if resp.ID != req.ID {
				c.g.finish(j, done, done, 0, ClassProtocol, "response id "+resp.ID+" for "+req.ID)
			} else {
				c.g.finish(j, done, done, 1000, "", "")
			}
		} else {
			st, _ := status.FromError(err)
			class := ClassStatus
			switch {
			case st.Code() == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded):
				class = ClassTimeout
			case st.Code() == codes.Unavailable:
				class = ClassConnect
			}
			code := 1000 + int(st.Code())
			if class != ClassStatus {
				code = 0
			}
			c.g.finish(j, done, done, code, class, "grpc "+st.Code().String()+": "+st.Message())
		}
		c.g.release(c)
	}
}

// grpcStatusKey names a gRPC status in Result.StatusCodes.
func grpcStatusKey(code int) string { return "grpc-" + strconv.Itoa(code-1000) }
