package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/hopscope/hopscope/clock"
)

// TCP flags as in the event's Flags byte.
const (
	FlagFIN = 0x01
	FlagSYN = 0x02
	FlagRST = 0x04
	FlagPSH = 0x08
	FlagACK = 0x10
)

// eventHdr is the fixed part of the kernel's struct event (bpf/probe.c).
const eventHdr = 64

// Event is one segment seen at an observation point.
type Event struct {
	TS       int64 // CLOCK_MONOTONIC ns
	Point    uint32
	Seq, Ack uint32
	Len      uint32 // TCP payload length (a GSO skb: all its segments)
	Src, Dst netip.AddrPort
	Flags    uint8
	Data     []byte // the captured payload prefix; valid until the next event
}

// DecodeEvent parses one ring-buffer record. Data aliases b.
func DecodeEvent(b []byte, e *Event) error {
	if len(b) < eventHdr {
		return fmt.Errorf("event: %d bytes, want at least %d", len(b), eventHdr)
	}
	le := binary.LittleEndian
	e.TS = int64(le.Uint64(b[0:]))
	e.Point = le.Uint32(b[8:])
	e.Seq = le.Uint32(b[12:])
	e.Ack = le.Uint32(b[16:])
	e.Len = le.Uint32(b[20:])
	sport, dport := le.Uint16(b[56:]), le.Uint16(b[58:])
	e.Flags = b[60]
	family := b[61]
	n := int(le.Uint16(b[62:]))
	if n > len(b)-eventHdr || uint32(n) > e.Len {
		return fmt.Errorf("event: capture length %d exceeds record (%d) or payload (%d)", n, len(b)-eventHdr, e.Len)
	}
	switch family {
	case 4:
		e.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[24:28])), sport)
		e.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[40:44])), dport)
	case 6:
		e.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[24:40])), sport)
		e.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[40:56])), dport)
	default:
		return fmt.Errorf("event: address family %d", family)
	}
	e.Data = b[eventHdr : eventHdr+n]
	return nil
}

func nowNs() int64 { return clock.Now() }

// read drains the ring buffer on a timer (DESIGN.md, "Cost": the program
// submits without waking us unless the ring fills past WakeupBytes) and
// feeds the correlator one batch per drain.
func (p *Probe) read() {
	defer close(p.done)
	var (
		rec     ringbuf.Record
		ev      Event
		waiters []chan struct{}
		lastExp = nowNs()
	)
	for {
		p.reader.SetDeadline(time.Now().Add(p.cfg.Drain))
		// Read everything available; the deadline ends one drain.
		var err error
		p.mu.Lock()
		for {
			p.mu.Unlock() // not held while ReadInto waits for the deadline
			err = p.reader.ReadInto(&rec)
			p.mu.Lock()
			if err != nil {
				break
			}
			p.received++
			if derr := DecodeEvent(rec.RawSample, &ev); derr != nil {
				p.corr.health.BadEvents++
				continue
			}
			p.observe(&ev)
		}
		if now := nowNs(); now-lastExp > int64(100*time.Millisecond) {
			p.corr.expire(now)
			lastExp = now
		}
		p.mu.Unlock()
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, ringbuf.ErrFlushed):
			for _, w := range waiters {
				close(w)
			}
			waiters = waiters[:0]
		case errors.Is(err, ringbuf.ErrClosed):
			for _, w := range waiters {
				close(w)
			}
			return
		default:
			p.mu.Lock()
			p.readErr = fmt.Errorf("read ring buffer: %w", err)
			p.mu.Unlock()
			for _, w := range waiters {
				close(w)
			}
			return
		}
		// Collect sync requests that arrived; they are served by the next
		// complete drain, which starts after they asked.
	collect:
		for {
			select {
			case w := <-p.drained:
				waiters = append(waiters, w)
			default:
				break collect
			}
		}
	}
}

// observe feeds the correlator, turning a parser bug into a counted error
// instead of a crash of the process that hosts the probe (the node agent).
func (p *Probe) observe(ev *Event) {
	defer func() {
		if r := recover(); r != nil {
			p.corr.health.ParseErrors++
			p.cfg.Logf("probe: correlator panic on an event at point %d (counted as a parse error): %v", ev.Point, r)
		}
	}()
	p.corr.observe(ev)
}
