package probe

import (
	"encoding/binary"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/hopscope/hopscope/reqid"
	"github.com/hopscope/hopscope/target"
)

// A synthetic server pod: point 1 is its device's ingress, point 2 its
// egress; port 8080 is the server's.
var (
	cli = netip.MustParseAddrPort("198.18.0.1:40000")
	srv = netip.MustParseAddrPort("198.18.0.2:8080")
)

func newTestCorrelator() *correlator {
	c := newCorrelator(time.Second, true)
	c.serverPorts[8080] = true
	c.addOwner(1, pointOwner{target: "s", role: target.Server, kind: DevIngress, app: 8080, netns: 1})
	c.addOwner(2, pointOwner{target: "s", role: target.Server, kind: DevEgress, app: 8080, netns: 1})
	c.setExpected(1<<ServerDevReq | 1<<ServerDevResp)
	return c
}

// conn tracks sequence numbers of one synthetic connection.
type conn struct {
	c        *correlator
	seq      [2]uint32 // 0: client->server, 1: server->client
	ts       int64
	capture  int
	reqPoint uint32
}

func newConn(c *correlator, syn bool) *conn {
	k := &conn{c: c, seq: [2]uint32{1000, 5000}, ts: 1e9, capture: 128, reqPoint: 1}
	if syn {
		k.send(true, FlagSYN, nil)
		k.send(false, FlagSYN|FlagACK, nil)
	}
	return k
}

// send delivers one segment; it returns the event's timestamp.
func (k *conn) send(req bool, flags uint8, payload []byte) int64 {
	k.ts += 1000
	e := Event{TS: k.ts, Point: k.reqPoint, Src: cli, Dst: srv, Flags: flags | FlagACK, Len: uint32(len(payload))}
	i := 0
	if !req {
		e.Point, e.Src, e.Dst, i = 2, srv, cli, 1
	}
	e.Seq = k.seq[i]
	n := len(payload)
	if n > k.capture {
		n = k.capture
	}
	e.Data = payload[:n]
	k.c.observe(&e)
	k.seq[i] += uint32(len(payload))
	if flags&(FlagSYN|FlagFIN) != 0 {
		k.seq[i]++
	}
	return e.TS
}

func get(id uint64) []byte {
	return []byte("GET /x?" + reqid.String(id) + " HTTP/1.1\r\nHost: s\r\n\r\n")
}

func ok(body string) []byte {
	return []byte("HTTP/1.1 200 OK\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body)
}

func itoa(n int) string { return strconv.Itoa(n) }

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func TestCorrelatorHTTP1(t *testing.T) {
	type step struct {
		req   bool
		flags uint8
		data  []byte
	}
	post := []byte("POST /x?" + reqid.String(3) + " HTTP/1.1\r\nContent-Length: 300\r\n\r\n")
	body := make([]byte, 300)
	cases := []struct {
		name    string
		syn     bool
		capture int
		steps   []step
		want    Health // the counts compared
		apps    int64  // app hops recorded
	}{
		{"one request", true, 0, []step{{true, 0, get(1)}, {false, 0, ok("hi")}}, Health{Requests: 1}, 1},
		{"keep-alive", true, 0, []step{{true, 0, get(1)}, {false, 0, ok("hi")}, {true, 0, get(2)}, {false, 0, ok("yo")}}, Health{Requests: 2}, 2},
		{"pipelined", true, 0, []step{{true, 0, cat(get(1), get(2))}, {false, 0, cat(ok("a"), ok("b"))}}, Health{Requests: 2}, 2},
		{"body over two segments", true, 0, []step{{true, 0, cat(post, body[:100])}, {true, 0, body[100:]}, {false, 0, ok("")}, {true, 0, get(4)}, {false, 0, ok("x")}}, Health{Requests: 2}, 2},
		{"response over two segments", true, 0, []step{{true, 0, get(1)}, {false, 0, ok(string(body))[:150]}, {false, 0, ok(string(body))[150:]}, {true, 0, get(2)}, {false, 0, ok("x")}}, Health{Requests: 2}, 2},
		{"retransmit", true, 0, []step{{true, 0, get(1)}, {false, 0, ok("hi")}}, Health{Requests: 1}, 1},
		{"no id", true, 0, []step{{true, 0, []byte("GET / HTTP/1.1\r\n\r\n")}, {false, 0, ok("")}}, Health{NoID: 1}, 0},
		{"not http", true, 0, []step{{true, 0, []byte("\x16\x03\x01\x02\x00 tls hello")}, {false, 0, []byte("\x16\x03\x03")}}, Health{ParseErrors: 1}, 0},
		{"not http, later segments ignored", true, 0, []step{{true, 0, []byte("\x16\x03\x01\x02\x00 tls hello")}, {true, 0, get(1)}, {false, 0, ok("")}}, Health{ParseErrors: 1}, 0},
		{"unmatched response", true, 0, []step{{false, 0, ok("")}}, Health{Unmatched: 1}, 0},
		{"opened before attach", false, 0, []step{{true, 0, body[:50]}, {true, 0, get(7)}, {false, 0, ok("")}}, Health{Requests: 1}, 1},
		{"reset mid-request", true, 0, []step{{true, 0, get(1)}, {false, FlagRST, nil}}, Health{Resets: 1, Partial: 1}, 0},
		{"capture cuts the id", true, 10, []step{{true, 0, get(1)}, {false, 0, ok("")}}, Health{NoID: 1}, 0},
		{"interim 100 continue", true, 0, []step{{true, 0, get(1)}, {false, 0, []byte("HTTP/1.1 100 Continue\r\n\r\n")}, {false, 0, ok("")}}, Health{Requests: 1}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCorrelator()
			k := newConn(c, tc.syn)
			if tc.capture > 0 {
				k.capture = tc.capture
			}
			for i, s := range tc.steps {
				k.send(s.req, s.flags, s.data)
				if tc.name == "retransmit" && i == 0 {
					k.seq[0] -= uint32(len(s.data))
					k.send(s.req, s.flags, s.data)
				}
			}
			c.expire(k.ts + int64(2*time.Second))
			got := c.health
			if tc.name == "retransmit" && got.Retransmits != 1 {
				t.Errorf("retransmits %d, want 1", got.Retransmits)
			}
			got.Retransmits = 0
			if got != tc.want {
				t.Errorf("health %+v\nwant   %+v", got, tc.want)
			}
			var n int64
			if h := c.hists[HopApp]; h != nil {
				n = h.TotalCount()
			}
			if n != tc.apps {
				t.Errorf("app hops %d, want %d", n, tc.apps)
			}
		})
	}
}

// h2 frame builders
func frame(typ, flags uint8, stream uint32, payload []byte) []byte {
	b := []byte{byte(len(payload) >> 16), byte(len(payload) >> 8), byte(len(payload)), typ, flags, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[5:], stream)
	return append(b, payload...)
}

func grpcMsg(id uint64) []byte {
	msg := protowire.AppendTag(nil, 1, protowire.BytesType)
	msg = protowire.AppendString(msg, reqid.String(id))
	msg = protowire.AppendTag(msg, 2, protowire.VarintType)
	msg = protowire.AppendVarint(msg, 42)
	out := []byte{0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(out[1:], uint32(len(msg)))
	return append(out, msg...)
}

func TestCorrelatorH2(t *testing.T) {
	c := newTestCorrelator()
	k := newConn(c, true)
	hdrs := []byte("\x83\x86\x84\x41\x8a\x08\x9d\x5c\x0b\x81\x70\xdc\x78\x0f\x03") // HPACK, not decoded
	// client preface + SETTINGS, then two concurrent streams
	k.send(true, 0, cat([]byte(h2Preface), frame(4, 0, 0, nil)))
	k.send(false, 0, frame(4, 0, 0, nil))
	t1 := k.send(true, 0, cat(frame(1, 4, 1, hdrs), frame(0, 1, 1, grpcMsg(11))))
	t3 := k.send(true, 0, frame(1, 4, 3, hdrs))
	k.send(true, 0, frame(0, 1, 3, grpcMsg(13)))
	// responses out of order: stream 3 first
	r3 := k.send(false, 0, cat(frame(1, 4, 3, hdrs), frame(0, 0, 3, grpcMsg(0)), frame(1, 5, 3, hdrs)))
	r1 := k.send(false, 0, cat(frame(1, 4, 1, hdrs), frame(0, 0, 1, []byte{0, 0, 0, 0, 0}), frame(1, 5, 1, hdrs)))
	// a response on a stream never opened
	k.send(false, 0, frame(1, 5, 9, hdrs))
	if c.health.Requests != 2 || c.health.Unmatched != 1 || c.health.ParseErrors != 0 {
		t.Fatalf("health %+v", c.health)
	}
	byID := map[uint64]Timeline{}
	for _, tl := range c.timelines {
		byID[tl.ID] = tl
	}
	if tl := byID[11]; tl.At[ServerDevReq] != t1 || tl.At[ServerDevResp] != r1 {
		t.Errorf("stream 1: %v, want req %d resp %d", tl.At, t1, r1)
	}
	if tl := byID[13]; tl.At[ServerDevReq] != t3 || tl.At[ServerDevResp] != r3 {
		t.Errorf("stream 3: %v, want req %d resp %d (request time is its HEADERS frame)", tl.At, t3, r3)
	}
}

func TestGrpcIDCutByCapture(t *testing.T) {
	m := grpcMsg(0xfeed)
	f, _ := parseH2Frame(frame(0, 0, 1, m))
	if id, ok := grpcID(f); !ok || id != 0xfeed {
		t.Fatalf("grpcID = %x %v", id, ok)
	}
	f.payload = f.payload[:10]
	if _, ok := grpcID(f); ok {
		t.Fatal("found an ID in a message cut before it")
	}
}

// TestH2FrameBeyondCapture: a frame that runs past the captured prefix
// (and a next frame starting beyond it) loses sync, never panics.
func TestH2FrameBeyondCapture(t *testing.T) {
	c := newTestCorrelator()
	k := newConn(c, true)
	k.capture = 64
	big := make([]byte, 100)
	k.send(true, 0, cat([]byte(h2Preface), frame(1, 4, 1, big), frame(0, 1, 1, grpcMsg(1))))
	k.send(true, 0, cat(frame(1, 4, 3, nil), frame(0, 1, 3, grpcMsg(3))))
	k.send(false, 0, frame(1, 5, 3, nil))
	if c.health.Requests != 1 {
		t.Errorf("health %+v: want stream 3 found after resynchronising", c.health)
	}
}

// TestHoleFilledLater: a segment dropped before this point and
// retransmitted after later data is parsed when it arrives, not skipped as
// a retransmit.
func TestHoleFilledLater(t *testing.T) {
	for _, proto := range []string{"h1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			c := newTestCorrelator()
			k := newConn(c, true)
			var first, lost, later []byte
			if proto == "h1" {
				first, lost, later = cat(get(1)), get(2), get(3)
			} else {
				first = cat([]byte(h2Preface), frame(1, 4, 1, nil), frame(0, 1, 1, grpcMsg(1)))
				lost = cat(frame(1, 4, 3, nil), frame(0, 1, 3, grpcMsg(2)))
				later = cat(frame(1, 4, 5, nil), frame(0, 1, 5, grpcMsg(3)))
			}
			k.send(true, 0, first)
			lostSeq := k.seq[0]
			k.seq[0] += uint32(len(lost)) // dropped before this point
			k.send(true, 0, later)
			end := k.seq[0]
			k.seq[0] = lostSeq
			k.send(true, 0, lost) // the retransmit
			k.seq[0] = end
			for _, id := range []uint64{1, 2, 3} {
				if c.pending[id] == nil || c.pending[id].At[ServerDevReq] == 0 {
					t.Errorf("request %d not seen", id)
				}
			}
			if c.health.Retransmits != 0 {
				t.Errorf("hole fill counted as a retransmit")
			}
		})
	}
}
