package load

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync/atomic"

	"github.com/hopscope/hopscope/clock"
	"github.com/hopscope/hopscope/reqid"
)

// httpConn is one keep-alive HTTP/1.1 connection with at most one request
// outstanding. The request is written by whoever dispatches it (the
// scheduler, or this connection's reader when it takes a waiting request),
// so the send is not delayed by a goroutine wake-up; the reader goroutine
// sits in Read until the response comes.
type httpConn struct {
	g        *gen
	nc       net.Conn
	w        *rawConnWriter // raw system calls in open loop (see raw.go); nil: nc.Write
	br       *bufio.Reader
	req      []byte // the request, with the ID's 16 hex digits at idAt
	idAt     int
	cur      atomic.Pointer[job]
	timedOut atomic.Bool
	writeErr atomic.Bool
}

var errProtocol = errors.New("malformed HTTP/1.1 response")

func (g *gen) dialHTTP() (*httpConn, error) {
	nc, err := net.DialTimeout("tcp", g.t.Addr, g.cfg.Timeout)
	if err != nil {
		return nil, err
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		return nil, fmt.Errorf("dial %s: not a TCP connection", g.t.Addr)
	}
	tc.SetNoDelay(true)
	rc, err := tc.SyscallConn()
	if err != nil {
		nc.Close()
		return nil, err
	}
	c := &httpConn{g: g, nc: nc}
	if g.cfg.ClosedLoop {
		// Never idle: the plain net.Conn calls are as cheap (see raw.go).
		c.br = bufio.NewReaderSize(nc, 16<<10)
	} else {
		c.br = bufio.NewReaderSize(newRawConnReader(rc, true), 16<<10)
		c.w = newRawConnWriter(rc, true)
	}
	c.req, c.idAt = g.httpRequest()
	go c.readLoop()
	return c, nil
}

// httpRequest builds the request bytes once per connection:
// GET /path?hsid=<16 hex> HTTP/1.1 with Host and User-Agent.
func (g *gen) httpRequest() ([]byte, int) {
	b := make([]byte, 0, 128+len(g.t.Path)+len(g.t.Host))
	b = append(b, "GET "...)
	b = append(b, g.t.Path...)
	if bytes.IndexByte([]byte(g.t.Path), '?') >= 0 {
		b = append(b, '&')
	} else {
		b = append(b, '?')
	}
	b = reqid.Append(b, 0)
	at := len(b) - 16
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, g.t.Host...)
	b = append(b, "\r\nUser-Agent: hopscope\r\n\r\n"...)
	return b, at
}

const hexdigits = "0123456789abcdef"

func (c *httpConn) current() *atomic.Pointer[job] { return &c.cur }

// launch writes the request of j, which the pool has already made c's
// current job. It runs in the dispatcher's goroutine.
func (c *httpConn) launch(j *job) {
	id := j.id
	p := c.req[c.idAt : c.idAt+16]
	for k := 15; k >= 0; k-- {
		p[k] = hexdigits[id&0xf]
		id >>= 4
	}
	var err error
	if c.w != nil {
		err = c.w.writeAll(c.req)
	} else {
		_, err = c.nc.Write(c.req)
	}
	if err != nil {
		c.writeErr.Store(true)
		c.nc.Close() // the reader finishes j with a write error
	}
}

// expire is called by the sweeper when the current job ran out of time.
func (c *httpConn) expire() {
	c.timedOut.Store(true)
	c.nc.Close()
}

func (c *httpConn) kill() { c.nc.Close() }

func (c *httpConn) readLoop() {
	for {
		_, err := c.br.Peek(1)
		first := clock.Now()
		if err != nil {
			c.g.connDied(c, first, c.errClass(err), err)
			return
		}
		j := c.cur.Load()
		if j == nil { // bytes nobody asked for
			c.g.connDied(c, first, ClassProtocol, errors.New("unsolicited response bytes"))
			return
		}
		status, closeConn, err := readResponse(c.br)
		done := clock.Now()
		if err != nil {
			c.g.connDied(c, done, c.errClass(err), err)
			return
		}
		c.cur.Store(nil)
		c.g.finish(j, first, done, status, "", "")
		if closeConn {
			c.g.connDied(c, done, "", nil)
			return
		}
		c.g.release(c)
	}
}

func (c *httpConn) errClass(err error) string {
	switch {
	case c.timedOut.Load():
		return ClassTimeout
	case c.writeErr.Load():
		return ClassWrite
	case errors.Is(err, errProtocol):
		return ClassProtocol
	}
	return ClassRead
}

// readResponse reads one response and discards its body. It returns the
// status and whether the server will close the connection.
func readResponse(br *bufio.Reader) (status int, closeConn bool, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	// HTTP/1.x SP 3DIGIT ...
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, false, fmt.Errorf("%w: status line %q", errProtocol, trim(line))
	}
	for _, d := range line[9:12] {
		if d < '0' || d > '9' {
			return 0, false, fmt.Errorf("%w: status line %q", errProtocol, trim(line))
		}
		status = status*10 + int(d-'0')
	}
	closeConn = line[7] == '0' // HTTP/1.0 closes unless told otherwise
	length := int64(-1)
	chunked := false
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			if err == bufio.ErrBufferFull {
				return status, false, fmt.Errorf("%w: header line longer than %d bytes", errProtocol, br.Size())
			}
			return status, false, err
		}
		h := trim(line)
		if len(h) == 0 {
			break
		}
		colon := bytes.IndexByte(h, ':')
		if colon <= 0 {
			return status, false, fmt.Errorf("%w: header %q", errProtocol, h)
		}
		name, val := h[:colon], bytes.TrimSpace(h[colon+1:])
		switch {
		case asciiEqualFold(name, "content-length"):
			n, ok := parseDecimal(val)
			if !ok {
				return status, false, fmt.Errorf("%w: Content-Length %q", errProtocol, val)
			}
			length = n
		case asciiEqualFold(name, "transfer-encoding"):
			chunked = containsFold(val, "chunked")
		case asciiEqualFold(name, "connection"):
			if containsFold(val, "close") {
				closeConn = true
			} else if containsFold(val, "keep-alive") {
				closeConn = false
			}
		}
	}
	switch {
	case status/100 == 1 || status == 204 || status == 304:
		if status/100 == 1 { // an interim response: the real one follows
			return readResponse(br)
		}
		return status, closeConn, nil
	case chunked:
		return status, closeConn, discardChunked(br)
	case length >= 0:
		_, err = br.Discard(int(length))
		return status, closeConn, err
	default: // the body runs to the end of the connection
		_, err = io.Copy(io.Discard, br)
		return status, true, err
	}
}

func discardChunked(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		h := trim(line)
		if i := bytes.IndexByte(h, ';'); i >= 0 {
			h = h[:i]
		}
		n, err := strconv.ParseInt(string(bytes.TrimSpace(h)), 16, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("%w: chunk size %q", errProtocol, h)
		}
		if n == 0 {
			for { // trailers up to the empty line
				line, err = br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(trim(line)) == 0 {
					return nil
				}
			}
		}
		if _, err := br.Discard(int(n) + 2); err != nil {
			return err
		}
	}
}

func trim(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// parseDecimal parses a non-negative decimal without allocating.
func parseDecimal(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// containsFold reports whether b contains lower, ignoring ASCII case.
func containsFold(b []byte, lower string) bool {
	for i := 0; i+len(lower) <= len(b); i++ {
		if asciiEqualFold(b[i:i+len(lower)], lower) {
			return true
		}
	}
	return false
}

func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
