package probe

import (
	"bytes"
	"fmt"
	"math/bits"
	"net/netip"
	"time"

	"github.com/hopscope/hopscope/hist"
	"github.com/hopscope/hopscope/target"
)

// Stage is one observation of a request's path, in path order (DESIGN.md,
// the hop model).
type Stage int8

const (
	ClientLoReq   Stage = iota // C.lo: the request enters the client proxy
	ClientDevReq               // C.dev egress: the request leaves pod C
	ServerDevReq               // S.dev ingress: the request enters pod S
	ServerLoReq                // S.lo: the request leaves the server proxy for the app
	ServerLoResp               // S.lo: the response leaves the app
	ServerDevResp              // S.dev egress: the response leaves pod S
	ClientDevResp              // C.dev ingress: the response enters pod C
	ClientLoResp               // C.lo: the response leaves the client proxy for the app
	NumStages
)

var stageNames = [NumStages]string{
	"client.lo/req", "client.dev/req", "server.dev/req", "server.lo/req",
	"server.lo/resp", "server.dev/resp", "client.dev/resp", "client.lo/resp",
}

func (s Stage) String() string {
	if s >= 0 && s < NumStages {
		return stageNames[s]
	}
	return fmt.Sprintf("stage%d", s)
}

// Hop names, in path order.
const (
	HopClientProxyOut = "client-proxy/out"
	HopNetworkReq     = "network/req"
	HopServerProxyIn  = "server-proxy/in"
	HopApp            = "app"
	HopServerProxyOut = "server-proxy/out"
	HopNetworkResp    = "network/resp"
	HopClientProxyIn  = "client-proxy/in"
)

// HopNames are the hops of a fully meshed path, in order.
var HopNames = []string{HopClientProxyOut, HopNetworkReq, HopServerProxyIn, HopApp,
	HopServerProxyOut, HopNetworkResp, HopClientProxyIn}

// hopName names the interval between two stages that are consecutive among
// those the attached targets can observe.
func hopName(a, b Stage) string {
	switch [2]Stage{a, b} {
	case [2]Stage{ClientLoReq, ClientDevReq}:
		return HopClientProxyOut
	case [2]Stage{ClientDevReq, ServerDevReq}:
		return HopNetworkReq
	case [2]Stage{ServerDevReq, ServerLoReq}:
		return HopServerProxyIn
	case [2]Stage{ServerLoReq, ServerLoResp}, [2]Stage{ServerDevReq, ServerDevResp}:
		return HopApp
	case [2]Stage{ServerLoResp, ServerDevResp}:
		return HopServerProxyOut
	case [2]Stage{ServerDevResp, ClientDevResp}:
		return HopNetworkResp
	case [2]Stage{ClientDevResp, ClientLoResp}:
		return HopClientProxyIn
	case [2]Stage{ClientDevReq, ClientDevResp}:
		return "remote" // no server pod watched: network + server together
	}
	return a.String() + ".." + b.String()
}

type stageSet uint16

func (s stageSet) has(st Stage) bool { return s&(1<<st) != 0 }

// Timeline is one request's observations: At[stage] is the CLOCK_MONOTONIC
// time of the segment that carried the start of the request or response
// at that point, 0 where it was not seen.
type Timeline struct {
	ID    uint64
	At    [NumStages]int64
	Where [NumStages]string // target name per stage
	first int64
}

// hops calls fn for each hop between consecutive stages of expected that
// were both observed; with expected 0, between consecutive observed stages.
func (t *Timeline) hops(expected stageSet, fn func(name string, a, b Stage, d int64)) {
	prev := Stage(-1)
	for s := Stage(0); s < NumStages; s++ {
		if expected != 0 && !expected.has(s) {
			continue
		}
		if t.At[s] == 0 {
			if expected != 0 {
				prev = -2 // a gap: the next hop would span two
			}
			continue
		}
		if prev >= 0 {
			fn(hopName(prev, s), prev, s, t.At[s]-t.At[prev])
		}
		prev = s
	}
}

// pointOwner is a target that owns an observation point.
type pointOwner struct {
	target                 string
	role                   target.Role
	kind                   PointKind
	inbound, outbound, app uint16
	netns                  uint32
}

type flowKey struct {
	ns       uint32
	cli, srv netip.AddrPort
}

type dirState struct {
	init     bool
	next     uint32 // next sequence number expected
	boundary uint32 // where the next message (h1) or frame (h2) starts
	known    bool
	// hole is the latest gap [holeLo, holeHi): data dropped between the
	// sender and this point, which TCP will retransmit; a segment that
	// fills it is new here, not a retransmit.
	holeLo, holeHi uint32
	hole           bool
}

const (
	protoUnknown = iota
	protoH1
	protoH2
	protoOther // not HTTP: ignored after one parse error
)

type outstanding struct {
	id    uint64
	hasID bool
}

type h2Stream struct {
	ts        int64
	stage     Stage
	where     string
	id        uint64
	hasID     bool
	triedID   bool
	responded bool
}

type flow struct {
	proto   int
	dir     [2]dirState // 0: toward the server, 1: toward the client
	fifo    []outstanding
	streams map[uint32]*h2Stream
	last    int64
}

type correlator struct {
	timeout     int64
	keep        bool
	serverPorts map[uint16]bool
	owners      map[uint32][]pointOwner
	expected    stageSet
	flows       map[flowKey]*flow
	pending     map[uint64]*Timeline
	hists       Hists
	targets     map[string]Hists
	timelines   []Timeline
	health      Health
}

func newCorrelator(timeout time.Duration, keep bool) *correlator {
	c := &correlator{timeout: int64(timeout), keep: keep, serverPorts: map[uint16]bool{},
		owners: map[uint32][]pointOwner{}, flows: map[flowKey]*flow{}, pending: map[uint64]*Timeline{}}
	c.reset()
	return c
}

func (c *correlator) reset() {
	c.hists = Hists{}
	c.targets = map[string]Hists{}
	c.timelines = nil
	c.health = Health{}
}

func (c *correlator) addOwner(point uint32, o pointOwner) {
	c.owners[point] = append(c.owners[point], o)
}

func (c *correlator) removeOwner(point uint32, name string) {
	os := c.owners[point][:0]
	for _, o := range c.owners[point] {
		if o.target != name {
			os = append(os, o)
		}
	}
	if len(os) == 0 {
		delete(c.owners, point)
		return
	}
	c.owners[point] = os
}

func (c *correlator) setExpected(s stageSet) { c.expected = s }

// stageOf finds the stage a segment marks at a point: by the owners' roles,
// the point's kind and the flow's server port.
func stageOf(owners []pointOwner, req bool, port uint16) (Stage, string, bool) {
	for _, o := range owners {
		switch o.kind {
		case Loopback:
			switch {
			case o.role == target.Client && o.outbound != 0 && port == o.outbound:
				return pick(req, ClientLoReq, ClientLoResp), o.target, true
			case o.role == target.Server && o.app != 0 && port == o.app:
				return pick(req, ServerLoReq, ServerLoResp), o.target, true
			}
		case DevEgress, DevIngress:
			ingress := o.kind == DevIngress
			if o.role == target.Client && req != ingress {
				return pick(req, ClientDevReq, ClientDevResp), o.target, true
			}
			if o.role == target.Server && req == ingress && serves(o, port) {
				return pick(req, ServerDevReq, ServerDevResp), o.target, true
			}
		}
	}
	return 0, "", false
}

func serves(o pointOwner, port uint16) bool {
	if o.inbound == 0 && o.app == 0 {
		return true
	}
	if o.inbound != 0 {
		return port == o.inbound
	}
	return port == o.app
}

func pick(req bool, a, b Stage) Stage {
	if req {
		return a
	}
	return b
}

func seqLT(a, b uint32) bool { return int32(a-b) < 0 }

// observe feeds one event. Events of one point arrive in order.
func (c *correlator) observe(e *Event) {
	owners := c.owners[e.Point]
	if len(owners) == 0 {
		return // a point detached while its events were in the ring
	}
	sp, dp := c.serverPorts[e.Src.Port()], c.serverPorts[e.Dst.Port()]
	req := dp && !sp || dp && sp && e.Dst.Port() < e.Src.Port()
	key := flowKey{ns: owners[0].netns, cli: e.Src, srv: e.Dst}
	port := e.Dst.Port()
	if !req {
		key.cli, key.srv = e.Dst, e.Src
		port = e.Src.Port()
	}
	f := c.flows[key]
	if e.Flags&FlagSYN != 0 {
		if req || f == nil {
			f = &flow{}
			c.flows[key] = f
		}
		d := &f.dir[dirIndex(req)]
		*d = dirState{init: true, next: e.Seq + 1, boundary: e.Seq + 1, known: true}
	}
	if f == nil {
		f = &flow{}
		c.flows[key] = f
	}
	f.last = e.TS
	if e.Len > 0 {
		c.segment(f, e, req, owners, port)
	}
	if e.Flags&FlagRST != 0 {
		c.health.Resets++
		delete(c.flows, key)
	} else if e.Flags&FlagFIN != 0 {
		// Requests still outstanding will show as partial; the flow's
		// state goes when both sides have closed or when it idles out.
		f.dir[dirIndex(req)].init = false
	}
}

func dirIndex(req bool) int {
	if req {
		return 0
	}
	return 1
}

func (c *correlator) segment(f *flow, e *Event, req bool, owners []pointOwner, port uint16) {
	st, where, ok := stageOf(owners, req, port)
	if !ok {
		return
	}
	d := &f.dir[dirIndex(req)]
	switch {
	case !d.init:
		*d = dirState{init: true, next: e.Seq + e.Len}
	case seqLT(e.Seq, d.next):
		if d.hole && !seqLT(e.Seq, d.holeLo) && !seqLT(d.holeHi, e.Seq+e.Len) {
			// fills (part of) the hole: parse it on its own, from its
			// start, without disturbing the stream's state
			if e.Seq == d.holeLo {
				d.holeLo = e.Seq + e.Len
			}
			d.hole = seqLT(d.holeLo, d.holeHi)
			c.parse(f, &dirState{init: true}, e, req, st, where)
			return
		}
		c.health.Retransmits++
		if !seqLT(d.next, e.Seq+e.Len) {
			return // nothing new
		}
		d.known = false // a partial overlap: resynchronise on a message start
		d.next = e.Seq + e.Len
	case e.Seq != d.next:
		d.known = false // a gap: a segment lost before this point
		d.hole, d.holeLo, d.holeHi = true, d.next, e.Seq
		d.next = e.Seq + e.Len
	default:
		d.next = e.Seq + e.Len
	}
	c.parse(f, d, e, req, st, where)
}

func (c *correlator) parse(f *flow, d *dirState, e *Event, req bool, st Stage, where string) {
	data := e.Data
	if f.proto == protoUnknown {
		f.proto = detect(data, req)
		if f.proto == protoUnknown {
			if d.known { // the stream's start, and not HTTP
				c.health.ParseErrors++
				f.proto = protoOther
			}
			return
		}
	}
	switch f.proto {
	case protoH1:
		c.h1Segment(f, d, e, req, st, where)
	case protoH2:
		c.h2Segment(f, d, e, req, st, where)
	}
}

// detect tells the protocol of a flow from a segment's first bytes.
func detect(b []byte, req bool) int {
	if req {
		if isH2Preface(b) {
			return protoH2
		}
		if _, ok := parseH1Request(b); ok {
			return protoH1
		}
		if fr, ok := parseH2Frame(b); ok && plausibleH2(fr) {
			return protoH2
		}
		return protoUnknown
	}
	if _, ok := parseH1Response(b); ok {
		return protoH1
	}
	if fr, ok := parseH2Frame(b); ok && plausibleH2(fr) {
		return protoH2
	}
	return protoUnknown
}

// start finds where in a segment the next message or frame starts: ok is
// false when it starts in a later segment.
func (d *dirState) start(seq, n uint32) (pos int, ok bool) {
	if !d.known {
		return 0, true // try the segment's start
	}
	if seqLT(d.boundary, seq) {
		d.known = false
		return 0, true
	}
	off := d.boundary - seq
	if off >= n {
		return 0, false
	}
	return int(off), true
}

func (c *correlator) h1Segment(f *flow, d *dirState, e *Event, req bool, st Stage, where string) {
	pos, ok := d.start(e.Seq, e.Len)
	if !ok {
		return
	}
	expect := d.known
	for {
		if pos >= len(e.Data) {
			if pos < int(e.Len) {
				d.known = false // the next message starts beyond the capture
			}
			return
		}
		var m h1Msg
		if req {
			m, ok = parseH1Request(e.Data[pos:])
		} else {
			m, ok = parseH1Response(e.Data[pos:])
		}
		if !ok {
			rest := e.Data[pos:]
			if cut := pos+len(rest) < int(e.Len) && len(rest) < 16; cut && expect {
				// the capture ends inside the start line: a message
				// whose ID (or status) was not captured
				if req {
					m, ok = h1Msg{bodyLen: -1}, true
				} else if bytes.HasPrefix([]byte("HTTP/1.1 "), rest) || bytes.HasPrefix(rest, []byte("HTTP/1.")) {
					m, ok = h1Msg{status: 200, bodyLen: -1}, true
				}
			}
		}
		if !ok {
			if expect {
				c.health.ParseErrors++
			}
			d.known = false
			return
		}
		if req {
			if len(f.fifo) >= 4096 {
				f.fifo = f.fifo[1:]
			}
			f.fifo = append(f.fifo, outstanding{m.id, m.hasID})
			if m.hasID {
				c.mark(m.id, st, e.TS, where)
			} else {
				c.health.NoID++
			}
		} else if m.status >= 200 {
			if len(f.fifo) == 0 {
				c.health.Unmatched++
			} else {
				o := f.fifo[0]
				f.fifo = f.fifo[1:]
				if o.hasID {
					c.mark(o.id, st, e.TS, where)
				}
			}
		}
		total, ok := m.total()
		if !ok {
			d.known = false
			return
		}
		pos += total
		d.boundary = e.Seq + uint32(pos)
		d.known = true
		expect = true
		if pos >= int(e.Len) {
			return
		}
	}
}

func (c *correlator) h2Segment(f *flow, d *dirState, e *Event, req bool, st Stage, where string) {
	pos, ok := d.start(e.Seq, e.Len)
	if !ok {
		return
	}
	expect := d.known
	if req && isH2Preface(e.Data[pos:]) && len(e.Data)-pos >= len(h2Preface) {
		pos += len(h2Preface)
	}
	if f.streams == nil {
		f.streams = map[uint32]*h2Stream{}
	}
	for pos < int(e.Len) {
		if pos >= len(e.Data) {
			d.known = false // the next frame starts beyond the capture
			return
		}
		fr, ok := parseH2Frame(e.Data[pos:])
		if ok && !expect && !plausibleH2(fr) {
			ok = false // resynchronising: a segment's start must look like a frame
		}
		if !ok {
			if expect && len(e.Data)-pos >= 9 {
				c.health.ParseErrors++
			}
			d.known = false // header not captured, or not a frame
			return
		}
		c.h2Frame(f, fr, req, e.TS, st, where)
		pos += 9 + fr.len
		d.boundary = e.Seq + uint32(pos)
		d.known = true
		expect = true
	}
}

func (c *correlator) h2Frame(f *flow, fr h2Frame, req bool, ts int64, st Stage, where string) {
	const endStream = 0x1
	if fr.stream == 0 {
		return
	}
	s := f.streams[fr.stream]
	switch {
	case fr.typ == h2RstStream:
		if s != nil {
			c.health.Resets++
			delete(f.streams, fr.stream)
		}
	case req && fr.typ == h2Headers:
		if s == nil {
			if len(f.streams) >= 4096 {
				for k := range f.streams {
					delete(f.streams, k)
					break
				}
			}
			f.streams[fr.stream] = &h2Stream{ts: ts, stage: st, where: where}
		}
	case req && fr.typ == h2Data:
		if s != nil && !s.triedID {
			s.triedID = true
			if s.id, s.hasID = grpcID(fr); s.hasID {
				c.mark(s.id, s.stage, s.ts, s.where)
			} else {
				c.health.NoID++
			}
		}
	case !req && (fr.typ == h2Headers || fr.typ == h2Data):
		if s == nil {
			if fr.typ == h2Headers {
				c.health.Unmatched++
			}
			return
		}
		if !s.responded {
			s.responded = true
			if s.hasID {
				c.mark(s.id, st, ts, where)
			}
		}
		if fr.flags&endStream != 0 {
			delete(f.streams, fr.stream)
		}
	}
}

// mark records that request id reached stage st at ts.
func (c *correlator) mark(id uint64, st Stage, ts int64, where string) {
	t := c.pending[id]
	if t == nil {
		t = &Timeline{ID: id, first: ts}
		c.pending[id] = t
	}
	if t.At[st] != 0 {
		return // seen again (a retransmit or a retry): keep the first
	}
	t.At[st] = ts
	t.Where[st] = where
	if c.expected != 0 && c.complete(t) {
		delete(c.pending, id)
		c.finish(t, true)
	}
}

func (c *correlator) complete(t *Timeline) bool {
	for s := Stage(0); s < NumStages; s++ {
		if c.expected.has(s) && t.At[s] == 0 {
			return false
		}
	}
	return true
}

func (c *correlator) finish(t *Timeline, complete bool) {
	if complete {
		c.health.Requests++
	} else {
		c.health.Partial++
	}
	t.hops(c.expected, func(name string, a, b Stage, d int64) {
		if d < 0 {
			c.health.Negative++
			return
		}
		hist.Record(c.hists.get(name), d)
		if w := t.Where[b]; w != "" {
			th := c.targets[w]
			if th == nil {
				th = Hists{}
				c.targets[w] = th
			}
			hist.Record(th.get(name), d)
		}
	})
	if c.keep {
		c.timelines = append(c.timelines, *t)
	}
}

// expire closes requests older than the timeout as partial, and forgets
// idle flows.
func (c *correlator) expire(now int64) {
	for id, t := range c.pending {
		if now-t.first > c.timeout {
			delete(c.pending, id)
			c.finish(t, false)
		}
	}
	idle := c.timeout
	if idle < int64(time.Minute) {
		idle = int64(time.Minute)
	}
	for k, f := range c.flows {
		if now-f.last > idle {
			delete(c.flows, k)
		}
	}
}

func (c *correlator) result() Result {
	r := Result{Hops: map[string]hist.Summary{}, Hists: Hists{}, Targets: map[string]Hists{}}
	for name, h := range c.hists {
		r.Hops[name] = hist.Summarize(h)
		r.Hists[name] = copyHist(h)
	}
	for tn, hs := range c.targets {
		cp := Hists{}
		for name, h := range hs {
			cp[name] = copyHist(h)
		}
		r.Targets[tn] = cp
	}
	r.Timelines = append([]Timeline(nil), c.timelines...)
	r.Probe = c.health
	r.Probe.Pending = uint64(len(c.pending))
	r.Expected = c.expectedStages()
	return r
}

func (c *correlator) expectedStages() []string {
	out := make([]string, 0, bits.OnesCount16(uint16(c.expected)))
	for s := Stage(0); s < NumStages; s++ {
		if c.expected.has(s) {
			out = append(out, s.String())
		}
	}
	return out
}
