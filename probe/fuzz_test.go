package probe

import (
	"bytes"
	"testing"

	"github.com/hopscope/hopscope/reqid"
)

// Run one with: go test -fuzz FuzzCorrelator ./probe/

func FuzzH1Request(f *testing.F) {
	f.Add(get(1))
	f.Add([]byte("POST /?hsid=00000000000000ff HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"))
	f.Add([]byte("GET /?hsid=0000"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ok := parseH1Request(b)
		if !ok {
			return
		}
		if m.hasID {
			if _, found := reqid.Find(b); !found {
				t.Fatalf("ID %x reported but none in %q", m.id, b)
			}
		}
		if n, known := m.total(); known && (n < m.hdrLen || m.hdrLen > len(b)) {
			t.Fatalf("total %d, header %d of %d bytes", n, m.hdrLen, len(b))
		}
	})
}

func FuzzH1Response(f *testing.F) {
	f.Add(ok("hello"))
	f.Add([]byte("HTTP/1.1 204 No Content\r\n\r\n"))
	f.Add([]byte("HTTP/1.0 200 OK\r\nContent-Length: -5\r\n\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ok := parseH1Response(b)
		if ok && (m.status < 100 || m.status > 999 || m.hdrLen > len(b)) {
			t.Fatalf("status %d, header %d of %d", m.status, m.hdrLen, len(b))
		}
	})
}

func FuzzH2(f *testing.F) {
	f.Add(frame(0, 0, 1, grpcMsg(5)))
	f.Add(frame(0, h2FlagPadded, 1, append([]byte{1}, grpcMsg(5)...)))
	f.Add(frame(1, 4, 3, []byte{0x83}))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, ok := parseH2Frame(b)
		if !ok {
			return
		}
		if len(fr.payload) > fr.len || 9+len(fr.payload) > len(b) {
			t.Fatalf("payload %d of frame length %d, input %d", len(fr.payload), fr.len, len(b))
		}
		plausibleH2(fr)
		if id, ok := grpcID(fr); ok {
			if !bytes.Contains(b, []byte(reqid.String(id))) {
				t.Fatalf("ID %x not in the frame", id)
			}
		}
	})
}

// FuzzCorrelator feeds arbitrary segments of one connection, both
// directions, with arbitrary flags: it must never panic, and every request
// it finishes must have been marked at a stage.
func FuzzCorrelator(f *testing.F) {
	f.Add(cat(get(1), []byte{0xff}, ok("x")), uint8(3), uint8(0))
	f.Add(cat([]byte(h2Preface), frame(1, 4, 1, nil), frame(0, 1, 1, grpcMsg(9))), uint8(1), uint8(4))
	f.Add(cat([]byte(h2Preface), frame(1, 4, 1, make([]byte, 100)), frame(0, 1, 1, grpcMsg(9))), uint8(63), uint8(0))
	f.Fuzz(func(t *testing.T, b []byte, cuts uint8, flags uint8) {
		c := newTestCorrelator()
		k := newConn(c, flags&0x80 != 0)
		k.capture = 1 + int(cuts)%MaxCapture
		n := 1 + int(cuts)%7
		step := len(b)/n + 1
		for i := 0; i < len(b); i += step {
			end := i + step
			if end > len(b) {
				end = len(b)
			}
			req := (i/step)%2 == 0
			fl := uint8(0)
			if i/step == int(flags)%5 {
				fl = flags & (FlagRST | FlagFIN | FlagSYN)
			}
			if flags&0x40 != 0 {
				k.seq[0] -= uint32(flags % 16) // retransmits and overlaps
			}
			k.send(req, fl, b[i:end])
		}
		c.expire(k.ts + int64(c.timeout) + 1)
		for _, tl := range c.timelines {
			if tl.At[ServerDevReq] == 0 && tl.At[ServerDevResp] == 0 {
				t.Fatalf("finished request %x with no stage", tl.ID)
			}
		}
		if len(c.pending) != 0 {
			t.Fatalf("%d requests pending after expiry", len(c.pending))
		}
	})
}
