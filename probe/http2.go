package probe

import (
	"bytes"
	"encoding/binary"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/hopscope/hopscope/reqid"
)

const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// HTTP/2 frame types hopscope follows.
const (
	h2Data      = 0x0
	h2Headers   = 0x1
	h2RstStream = 0x3
	h2MaxType   = 0x9 // CONTINUATION, the last standard type
)

const h2FlagPadded = 0x8

// h2Frame is one frame header and the captured part of its payload.
type h2Frame struct {
	len     int
	typ     uint8
	flags   uint8
	stream  uint32
	payload []byte // captured part, may be shorter than len
}

// parseH2Frame reads the frame header at b. ok is false when fewer than 9
// bytes were captured or the header is implausible (reserved bit set, a
// type beyond the standard ones, a length beyond 16 MiB).
func parseH2Frame(b []byte) (f h2Frame, ok bool) {
	if len(b) < 9 {
		return f, false
	}
	f.len = int(b[0])<<16 | int(b[1])<<8 | int(b[2])
	f.typ = b[3]
	f.flags = b[4]
	sid := binary.BigEndian.Uint32(b[5:9])
	if sid&0x80000000 != 0 || f.typ > h2MaxType {
		return f, false
	}
	f.stream = sid
	end := 9 + f.len
	if end > len(b) {
		end = len(b)
	}
	f.payload = b[9:end]
	return f, true
}

// grpcID finds the request ID in the captured start of a gRPC request's
// DATA frame: the 5-byte message prefix, then the message, whose field 1
// (the load generator's id string) holds "hsid=...". A message cut by the
// capture still yields the ID if its bytes were captured.
func grpcID(f h2Frame) (uint64, bool) {
	p := f.payload
	if f.flags&h2FlagPadded != 0 {
		if len(p) < 1 {
			return 0, false
		}
		p = p[1:]
	}
	if len(p) < 5 {
		return 0, false
	}
	msg := p[5:]
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			break
		}
		msg = msg[n:]
		if typ != protowire.BytesType {
			if m := protowire.ConsumeFieldValue(num, typ, msg); m >= 0 {
				msg = msg[m:]
				continue
			}
			break
		}
		l, n := protowire.ConsumeVarint(msg)
		if n < 0 {
			break
		}
		val := msg[n:]
		if uint64(len(val)) > l {
			val = val[:l]
		}
		if num == 1 {
			if id, ok := reqid.Find(val); ok {
				return id, true
			}
		}
		if uint64(len(msg[n:])) < l {
			break // cut by the capture
		}
		msg = msg[n+int(l):]
	}
	// not a well-formed message prefix: the marker is still unambiguous
	return reqid.Find(p)
}

func isH2Preface(b []byte) bool {
	n := len(b)
	if n > len(h2Preface) {
		n = len(h2Preface)
	}
	return n >= 3 && bytes.Equal(b[:n], []byte(h2Preface[:n]))
}

// plausibleH2 tells whether a frame header read at a guessed position (a
// connection seen mid-stream, or after losing sync) looks like a real one:
// connection-level frames on stream 0, stream frames elsewhere, lengths
// within the default maximum and as each type requires.
func plausibleH2(f h2Frame) bool {
	if f.len > 1<<14 {
		return false
	}
	switch f.typ {
	case 0x4: // SETTINGS
		return f.stream == 0 && f.len%6 == 0
	case 0x6: // PING
		return f.stream == 0 && f.len == 8
	case 0x7: // GOAWAY
		return f.stream == 0 && f.len >= 8
	case 0x8: // WINDOW_UPDATE
		return f.len == 4
	case 0x3: // RST_STREAM
		return f.stream != 0 && f.len == 4
	case 0x2: // PRIORITY
		return f.stream != 0 && f.len == 5
	default: // DATA, HEADERS, PUSH_PROMISE, CONTINUATION
		return f.stream != 0
	}
}
