package probe

import (
	"bytes"
	"strconv"

	"github.com/hopscope/hopscope/reqid"
)

// h1Msg is the start of an HTTP/1.x message read from a captured prefix.
type h1Msg struct {
	id      uint64
	hasID   bool
	status  int // responses
	hdrLen  int // through the blank line; 0 when the header end was not captured
	bodyLen int // -1 when unknown (chunked, read-until-close, not captured)
}

// total is the message's length on the wire, when known.
func (m h1Msg) total() (int, bool) {
	if m.hdrLen == 0 || m.bodyLen < 0 {
		return 0, false
	}
	return m.hdrLen + m.bodyLen, true
}

var crlf = []byte("\r\n")

// parseH1Request reads a request start at b: "METHOD SP target SP
// HTTP/1.x CRLF". A line cut short by the capture is accepted (and the ID
// taken if it was captured). ok is false when b does not start a request.
func parseH1Request(b []byte) (m h1Msg, ok bool) {
	i := 0
	for i < len(b) && i <= 16 && b[i] >= 'A' && b[i] <= 'Z' {
		i++
	}
	if i == 0 || i > 16 || i >= len(b) || b[i] != ' ' {
		return m, false
	}
	rest := b[i+1:]
	if len(rest) == 0 || rest[0] == ' ' || rest[0] == '\r' {
		return m, false
	}
	line, lineDone := rest, false
	if j := bytes.Index(rest, crlf); j >= 0 {
		line, lineDone = rest[:j], true
		if !bytes.HasSuffix(line, []byte(" HTTP/1.1")) && !bytes.HasSuffix(line, []byte(" HTTP/1.0")) {
			return m, false
		}
	}
	m.id, m.hasID = reqid.Find(line)
	m.bodyLen = -1
	if !lineDone {
		return m, true
	}
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return m, true
	}
	m.hdrLen = end + 4
	cl, chunked := h1Framing(b[:end])
	switch {
	case chunked:
		m.bodyLen = -1
	case cl >= 0:
		m.bodyLen = cl
	default:
		m.bodyLen = 0 // a request without a body
	}
	return m, true
}

// parseH1Response reads a response start at b: "HTTP/1.x SSS ...".
func parseH1Response(b []byte) (m h1Msg, ok bool) {
	if len(b) < 12 || !bytes.HasPrefix(b, []byte("HTTP/1.")) || b[8] != ' ' {
		return m, false
	}
	st, err := strconv.Atoi(string(b[9:12]))
	if err != nil || st < 100 || st > 999 || (len(b) > 12 && b[12] != ' ' && b[12] != '\r') {
		return m, false
	}
	m.status = st
	m.bodyLen = -1
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return m, true
	}
	m.hdrLen = end + 4
	cl, chunked := h1Framing(b[:end])
	switch {
	case st < 200 || st == 204 || st == 304:
		m.bodyLen = 0
	case chunked:
	case cl >= 0:
		m.bodyLen = cl
	}
	return m, true
}

// h1Framing reads Content-Length (-1 if absent or bad) and whether the
// body is chunked from a header block.
func h1Framing(hdr []byte) (cl int, chunked bool) {
	cl = -1
	_, rest, _ := bytes.Cut(hdr, crlf) // skip the start line
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, crlf)
		k, v, found := bytes.Cut(line, []byte(":"))
		if !found {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("content-length")):
			n, err := strconv.Atoi(string(v))
			if err == nil && n >= 0 {
				cl = n
			}
		case bytes.EqualFold(k, []byte("transfer-encoding")):
			if bytes.Contains(bytes.ToLower(v), []byte("chunked")) {
				chunked = true
			}
		}
	}
	return cl, chunked
}
