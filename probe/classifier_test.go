package probe

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// packet builds Ethernet + IPv4 (or IPv6) + TCP + payload.
func packet(v6 bool, sport, dport uint16, seq uint32, flags uint8, payload []byte) []byte {
	var b []byte
	eth := make([]byte, 14)
	copy(eth[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(eth[6:12], []byte{2, 0, 0, 0, 0, 1})
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], 77)
	tcp[12] = 5 << 4
	tcp[13] = flags
	if v6 {
		binary.BigEndian.PutUint16(eth[12:], 0x86dd)
		ip := make([]byte, 40)
		ip[0] = 6 << 4
		binary.BigEndian.PutUint16(ip[4:], uint16(20+len(payload)))
		ip[6] = 6
		ip[7] = 64
		ip[23], ip[39] = 1, 2 // ::1 -> ::2
		b = append(append(append(append(b, eth...), ip...), tcp...), payload...)
	} else {
		binary.BigEndian.PutUint16(eth[12:], 0x0800)
		ip := make([]byte, 20)
		ip[0] = 4<<4 | 5
		binary.BigEndian.PutUint16(ip[2:], uint16(20+20+len(payload)))
		ip[8] = 64
		ip[9] = 6
		copy(ip[12:], []byte{198, 18, 0, 1})
		copy(ip[16:], []byte{198, 18, 0, 2})
		b = append(append(append(append(b, eth...), ip...), tcp...), payload...)
	}
	return b
}

// v6ext puts IPv6 extension headers between a v6 packet's IP header and
// TCP: kinds[i] is the type of hdrs[i] (each a whole header, its first byte
// then set to the next one's type).
func v6ext(pkt []byte, kinds []byte, hdrs ...[]byte) []byte {
	const ipEnd = 14 + 40
	out := append([]byte(nil), pkt[:ipEnd]...)
	out[14+6] = kinds[0]
	for i, h := range hdrs {
		h = append([]byte(nil), h...)
		h[0] = 6 // TCP
		if i+1 < len(kinds) {
			h[0] = kinds[i+1]
		}
		out = append(out, h...)
	}
	out = append(out, pkt[ipEnd:]...)
	binary.BigEndian.PutUint16(out[14+4:], uint16(len(out)-ipEnd))
	return out
}

// testProgram starts a probe watching port 8080 and loads one classifier
// instance for point 7 (not attached anywhere: driven by BPF_PROG_TEST_RUN).
func testProgram(t testing.TB, cfg Config) (*Probe, *ebpf.Program) {
	t.Helper()
	needRoot(t)
	cfg.Ports = []uint16{8080}
	p := startProbe(t, cfg)
	prog, err := p.att.loadProgram(7)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	return p, prog
}

// drainEvents runs pkts through prog and returns the decoded events.
func runPackets(t *testing.T, p *Probe, prog *ebpf.Program, pkts [][]byte) []Event {
	t.Helper()
	var got []Event
	for _, pkt := range pkts {
		ret, err := prog.Run(&ebpf.RunOptions{Data: pkt})
		if err != nil {
			t.Fatalf("test run: %v", err)
		}
		if int32(ret) != -1 {
			t.Fatalf("program returned %d, want TC_ACT_UNSPEC (-1)", int32(ret))
		}
	}
	// read the ring directly: the probe's reader is stopped for this
	p.reader.SetDeadline(time.Now().Add(50 * time.Millisecond))
	for {
		rec, err := p.reader.Read()
		if err != nil {
			break
		}
		var e Event
		if err := DecodeEvent(rec.RawSample, &e); err != nil {
			t.Fatal(err)
		}
		e.Data = append([]byte(nil), e.Data...)
		got = append(got, e)
	}
	return got
}

func TestClassifier(t *testing.T) {
	big := make([]byte, 400)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	req := []byte("GET /?hsid=00000000000000a1 HTTP/1.1\r\n\r\n")
	cases := []struct {
		name     string
		capture  int
		pkt      []byte
		want     bool
		wantCap  int
		wantLen  uint32
		wantFrom netip.AddrPort
	}{
		{"v4 request", 0, packet(false, 40000, 8080, 1000, FlagACK|FlagPSH, req), true, len(req), uint32(len(req)), netip.MustParseAddrPort("198.18.0.1:40000")},
		{"v4 response direction", 0, packet(false, 8080, 40000, 5, FlagACK, []byte("HTTP/1.1 200 OK\r\n")), true, 17, 17, netip.MustParseAddrPort("198.18.0.1:8080")},
		{"v6", 0, packet(true, 40000, 8080, 1, FlagACK, req), true, len(req), uint32(len(req)), netip.MustParseAddrPort("[::1]:40000")},
		{"v6 hop-by-hop and destination options", 0, v6ext(packet(true, 40000, 8080, 1, FlagACK, req), []byte{0, 60},
			[]byte{0, 0, 1, 4, 0, 0, 0, 0}, []byte{0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}),
			true, len(req), uint32(len(req)), netip.MustParseAddrPort("[::1]:40000")},
		{"v6 first fragment", 0, v6ext(packet(true, 40000, 8080, 1, FlagACK, req), []byte{44}, []byte{0, 0, 0, 1, 0, 0, 0, 9}),
			true, len(req), uint32(len(req)), netip.MustParseAddrPort("[::1]:40000")},
		{"v6 later fragment skipped", 0, v6ext(packet(true, 40000, 8080, 1, FlagACK, req), []byte{44}, []byte{0, 0, 0x05, 0xc8, 0, 0, 0, 9}),
			false, 0, 0, netip.AddrPort{}},
		{"v6 ESP skipped", 0, v6ext(packet(true, 40000, 8080, 1, FlagACK, req), []byte{50}, []byte{0, 0, 0, 1, 0, 0, 0, 1}),
			false, 0, 0, netip.AddrPort{}},
		{"capture default 128", 0, packet(false, 40000, 8080, 1, FlagACK, big), true, 128, 400, netip.MustParseAddrPort("198.18.0.1:40000")},
		{"capture 64", 64, packet(false, 40000, 8080, 1, FlagACK, big), true, 64, 400, netip.MustParseAddrPort("198.18.0.1:40000")},
		{"capture 200", 200, packet(false, 40000, 8080, 1, FlagACK, big), true, 200, 400, netip.MustParseAddrPort("198.18.0.1:40000")},
		{"capture 256", 256, packet(false, 40000, 8080, 1, FlagACK, big), true, 256, 400, netip.MustParseAddrPort("198.18.0.1:40000")},
		{"syn", 0, packet(false, 40000, 8080, 1, FlagSYN, nil), true, 0, 0, netip.MustParseAddrPort("198.18.0.1:40000")},
		{"pure ack skipped", 0, packet(false, 40000, 8080, 1, FlagACK, nil), false, 0, 0, netip.AddrPort{}},
		{"other port skipped", 0, packet(false, 40000, 9090, 1, FlagACK, req), false, 0, 0, netip.AddrPort{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, prog := testProgram(t, Config{CaptureBytes: tc.capture})
			p.reader.Close() // stop the probe's reader; read the ring here
			<-p.done
			rd, err := newRawReader(p)
			if err != nil {
				t.Fatal(err)
			}
			p.reader = rd
			before, _ := p.Counters()
			evs := runPackets(t, p, prog, [][]byte{tc.pkt})
			after, _ := p.Counters()
			if after.Seen-before.Seen != 1 {
				t.Errorf("seen +%d, want +1", after.Seen-before.Seen)
			}
			if !tc.want {
				if len(evs) != 0 || after.Matched != before.Matched {
					t.Fatalf("got %d events (matched +%d), want none", len(evs), after.Matched-before.Matched)
				}
				return
			}
			if len(evs) != 1 {
				t.Fatalf("got %d events, want 1", len(evs))
			}
			e := evs[0]
			if e.Point != 7 || e.Src != tc.wantFrom || len(e.Data) != tc.wantCap || e.Len != tc.wantLen || e.Ack != 77 {
				t.Errorf("event point %d src %v cap %d len %d ack %d; want 7 %v %d %d 77", e.Point, e.Src, len(e.Data), e.Len, e.Ack, tc.wantFrom, tc.wantCap, tc.wantLen)
			}
			payload := tc.pkt[len(tc.pkt)-int(tc.wantLen):]
			if string(e.Data) != string(payload[:tc.wantCap]) {
				t.Errorf("captured %q, want %q", e.Data, payload[:tc.wantCap])
			}
			if after.Emitted-before.Emitted != 1 || after.Lost != before.Lost {
				t.Errorf("counters %+v -> %+v", before, after)
			}
		})
	}
}
