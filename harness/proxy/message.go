package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/hopscope/hopscope/clock"
)

// maxMessage bounds one buffered HTTP message (head and body).
const maxMessage = 64 << 20

var errTooLarge = errors.New("message larger than 64 MiB")

// msgReader reads whole HTTP/1.1 messages from a connection into its own
// buffer and remembers when the read that completed each one returned.
type msgReader struct {
	c    net.Conn
	buf  []byte
	r, w int   // unread bytes are buf[r:w]
	at   int64 // clock.Now() after the last read returned
	ks   *kstamps
	kat  int64 // the kernel's receive stamp of the last read (0: none)
}

// newMsgReader reads c; with ks (kernel stamps on c) every read is a
// recvmsg that also takes the kernel's receive stamp.
func newMsgReader(c net.Conn, ks *kstamps) *msgReader {
	return &msgReader{c: c, buf: make([]byte, 16<<10), ks: ks}
}

// fill reads once more from the connection.
func (m *msgReader) fill() error {
	if m.r > 0 && m.r == m.w {
		m.r, m.w = 0, 0
	}
	if m.w == len(m.buf) {
		if m.r > 0 {
			m.w = copy(m.buf, m.buf[m.r:m.w])
			m.r = 0
		} else {
			if len(m.buf) >= maxMessage {
				return errTooLarge
			}
			nb := make([]byte, 2*len(m.buf))
			copy(nb, m.buf[:m.w])
			m.buf = nb
		}
	}
	var n int
	var err error
	if m.ks != nil {
		n, err = m.ks.read(m.buf[m.w:])
		m.kat = m.ks.rx
	} else {
		n, err = m.c.Read(m.buf[m.w:])
	}
	m.at = clock.Now()
	m.w += n
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// head is what the proxy needs of a message's header block.
type head struct {
	first     []byte // request or status line
	headLen   int    // bytes up to and including the blank line
	length    int64  // Content-Length, or -1
	chunked   bool
	close     bool // Connection: close (or HTTP/1.0 without keep-alive)
	status    int  // responses only
	isHead    bool // requests only: method HEAD
	untilDone bool // responses only: body ends when the connection closes
}

// next returns the next complete message (a slice of the buffer, valid
// until the next call) and when the read that completed it returned.
// isResp selects response framing; reqHead says whether the request was
// HEAD (responses have no body then).
func (m *msgReader) next(isResp, reqHead bool) (msg []byte, h head, at int64, err error) {
	// The header block.
	for {
		if i := bytes.Index(m.buf[m.r:m.w], []byte("\r\n\r\n")); i >= 0 {
			if h, err = parseHead(m.buf[m.r:m.r+i+4], isResp); err != nil {
				return nil, h, 0, err
			}
			break
		}
		if err := m.fill(); err != nil {
			if errors.Is(err, io.EOF) && m.r != m.w {
				err = io.ErrUnexpectedEOF
			}
			return nil, h, 0, err
		}
	}
	// The body.
	noBody := isResp && (h.status/100 == 1 || h.status == 204 || h.status == 304 || reqHead)
	var end int // offset from m.r of the message's end; 0 while unknown
	for {
		avail := m.buf[m.r:m.w]
		switch {
		case noBody:
			end = h.headLen
		case h.chunked:
			n, ok, err := chunkedEnd(avail[h.headLen:])
			if err != nil {
				return nil, h, 0, err
			}
			if ok {
				end = h.headLen + n
			}
		case h.length >= 0:
			if int64(len(avail)) >= int64(h.headLen)+h.length {
				end = h.headLen + int(h.length)
			}
		case isResp:
			h.untilDone = true
		default:
			end = h.headLen // a request without length has no body
		}
		if end > 0 {
			break
		}
		err := m.fill()
		if h.untilDone && errors.Is(err, io.EOF) {
			end = m.w - m.r
			break
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, h, 0, err
		}
	}
	msg = m.buf[m.r : m.r+end]
	m.r += end
	h.first = msg[:bytes.Index(msg, []byte("\r\n"))] // the buffer may have moved
	return msg, h, m.at, nil
}

func parseHead(b []byte, isResp bool) (head, error) {
	h := head{length: -1, headLen: len(b)}
	lines := bytes.Split(b[:len(b)-4], []byte("\r\n"))
	h.first = lines[0]
	f := bytes.SplitN(h.first, []byte(" "), 3)
	if len(f) < 2 {
		return h, fmt.Errorf("malformed start line %q", h.first)
	}
	var proto []byte
	if isResp {
		proto = f[0]
		st, err := strconv.Atoi(string(f[1]))
		if err != nil || st < 100 || st > 999 {
			return h, fmt.Errorf("malformed status line %q", h.first)
		}
		h.status = st
	} else {
		if len(f) != 3 {
			return h, fmt.Errorf("malformed request line %q", h.first)
		}
		h.isHead = string(f[0]) == "HEAD"
		proto = f[2]
	}
	if !bytes.HasPrefix(proto, []byte("HTTP/1.")) {
		return h, fmt.Errorf("not HTTP/1.x: %q", h.first)
	}
	h.close = string(proto) == "HTTP/1.0"
	for _, l := range lines[1:] {
		k, v, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			n, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil || n < 0 {
				return h, fmt.Errorf("bad Content-Length %q", v)
			}
			if n > maxMessage {
				return h, errTooLarge
			}
			h.length = n
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			h.chunked = bytes.Contains(bytes.ToLower(v), []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			lv := bytes.ToLower(v)
			if bytes.Contains(lv, []byte("close")) {
				h.close = true
			} else if bytes.Contains(lv, []byte("keep-alive")) {
				h.close = false
			}
		}
	}
	if h.chunked {
		h.length = -1
	}
	return h, nil
}

// chunkedEnd reports where a chunked body that starts at b ends (after the
// last chunk and its trailers), if b holds all of it.
func chunkedEnd(b []byte) (n int, ok bool, err error) {
	for {
		i := bytes.Index(b[n:], []byte("\r\n"))
		if i < 0 {
			return 0, false, nil
		}
		line := b[n : n+i]
		if j := bytes.IndexByte(line, ';'); j >= 0 {
			line = line[:j]
		}
		size, perr := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if perr != nil || size < 0 || size > maxMessage {
			return 0, false, fmt.Errorf("bad chunk size %q", line)
		}
		n += i + 2
		if size == 0 {
			// Trailers: lines up to an empty one.
			if len(b) >= n+2 && b[n] == '\r' && b[n+1] == '\n' {
				return n + 2, true, nil
			}
			k := bytes.Index(b[n:], []byte("\r\n\r\n"))
			if k < 0 {
				return 0, false, nil
			}
			return n + k + 4, true, nil
		}
		if int64(len(b)-n) < size+2 {
			return 0, false, nil
		}
		n += int(size) + 2
	}
}
