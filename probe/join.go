package probe

import "github.com/hopscope/hopscope/reqid"

// Segment is one interval of a request's waterfall, CLOCK_MONOTONIC ns.
type Segment struct {
	Name     string
	From, To int64
}

// Waterfall is one request end to end: the load generator's record joined
// with the probe's timeline. Both use CLOCK_MONOTONIC, so on one node the
// client's user-space time (before its first packet, after its last) sits
// on the same axis as the hops.
type Waterfall struct {
	ID       uint64
	Record   reqid.Record
	Timeline Timeline
	// Segments in path order: "client/send" (write issued to the first
	// observation), the hops, "client/recv" (last observation to the
	// first response byte read).
	Segments []Segment
}

// Service is the client's service time (send to first response byte).
func (w Waterfall) Service() int64 { return w.Record.FirstByte - w.Record.Sent }

// HopSum is the sum of the probe's hops: first to last observation.
func (w Waterfall) HopSum() int64 {
	first, last := w.Timeline.span()
	return last - first
}

func (t *Timeline) span() (first, last int64) {
	for _, at := range t.At {
		if at == 0 {
			continue
		}
		if first == 0 || at < first {
			first = at
		}
		if at > last {
			last = at
		}
	}
	return first, last
}

// Join pairs timelines with load records by request ID. Records without a
// timeline (and timelines without a record) are counted, not joined.
func Join(tls []Timeline, recs []reqid.Record) (out []Waterfall, unjoined int) {
	byID := make(map[uint64]*Timeline, len(tls))
	for i := range tls {
		byID[tls[i].ID] = &tls[i]
	}
	for _, r := range recs {
		t, ok := byID[r.ID]
		if !ok || r.Sent == 0 || r.FirstByte == 0 {
			unjoined++
			continue
		}
		delete(byID, r.ID)
		w := Waterfall{ID: r.ID, Record: r, Timeline: *t}
		first, last := t.span()
		w.Segments = append(w.Segments, Segment{"client/send", r.Sent, first})
		t.hops(0, func(name string, a, b Stage, _ int64) {
			w.Segments = append(w.Segments, Segment{name, t.At[a], t.At[b]})
		})
		w.Segments = append(w.Segments, Segment{"client/recv", last, r.FirstByte})
		out = append(out, w)
	}
	return out, unjoined + len(byID)
}
