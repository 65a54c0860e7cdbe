package proxy

import (
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/hopscope/hopscope/clock"
)

// Kernel socket timestamps (SO_TIMESTAMPING) tighten the proxy's ground
// truth. Its own stamps are taken when a read returns and before a write is
// called, so they leave out the kernel's receive path and the proxy's
// wake-up, which the probe rightly counts. The kernel's stamps are taken
// where the probe looks:
//   - receive (SOF_TIMESTAMPING_RX_SOFTWARE): when the segment was delivered
//     to the socket's IP layer, a few µs after TC ingress saw it;
//   - send (SOF_TIMESTAMPING_TX_SCHED): in __dev_queue_xmit, right before
//     the device's TC egress hook.
//
// Both are CLOCK_REALTIME in the kernel; they are moved to CLOCK_MONOTONIC
// (clock.Now) with the offset between the two clocks read at the time.
const tsFlags = unix.SOF_TIMESTAMPING_RX_SOFTWARE | unix.SOF_TIMESTAMPING_TX_SCHED |
	unix.SOF_TIMESTAMPING_SOFTWARE | unix.SOF_TIMESTAMPING_OPT_ID | unix.SOF_TIMESTAMPING_OPT_TSONLY

// kstamps reads one TCP connection with recvmsg to get the receive stamp of
// each read, and takes send stamps off its error queue.
type kstamps struct {
	rc   syscall.RawConn
	sent uint64 // bytes written since timestamping was enabled: OPT_ID's key
	oob  []byte
	// pending send stamps by key (the last byte of a write), for a stamp
	// that arrives after the write returned (TCP sent the segment later)
	pending map[uint32]int64
	// the last read's receive stamp, and its result
	rx   int64
	n    int
	rerr error
	fn   func(fd uintptr) bool
	p    []byte
}

// enableKStamps turns on timestamping for c (a TCP connection or
// listener); the error says why it cannot.
func enableKStamps(c any) (*kstamps, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("kernel stamps: %T has no socket", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("kernel stamps: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPING, tsFlags)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, fmt.Errorf("kernel stamps: setsockopt SO_TIMESTAMPING: %w", serr)
	}
	k := &kstamps{rc: rc, oob: make([]byte, 512), pending: map[uint32]int64{}}
	k.fn = k.recv
	return k, nil
}

// read is one recvmsg into p; k.rx is then its receive stamp (0 if none).
func (k *kstamps) read(p []byte) (int, error) {
	k.p, k.n, k.rerr, k.rx = p, 0, nil, 0
	if err := k.rc.Read(k.fn); err != nil {
		return 0, err
	}
	if k.rerr != nil {
		return 0, k.rerr
	}
	if k.n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return k.n, nil
}

func (k *kstamps) recv(fd uintptr) bool {
	n, oobn, _, _, err := unix.Recvmsg(int(fd), k.p, k.oob, 0)
	if err == unix.EAGAIN {
		return false
	}
	if err == unix.EINTR {
		return false
	}
	if err != nil {
		k.rerr = err
		return true
	}
	k.n = n
	if ts, _ := cmsgs(k.oob[:oobn]); ts != 0 {
		k.rx = toMono(ts)
	}
	return true
}

// wrote counts n bytes written; tx returns the send stamp of the write
// whose last byte was the key-th since enabling (0 if it is not in yet).
func (k *kstamps) wrote(n int) uint32 {
	k.sent += uint64(n)
	return uint32(k.sent - 1)
}

// tx drains the error queue and returns the send stamp for key, or 0.
func (k *kstamps) tx(key uint32) int64 {
	_ = k.rc.Control(func(fd uintptr) {
		for {
			_, oobn, _, _, err := unix.Recvmsg(int(fd), nil, k.oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if err != nil {
				return
			}
			ts, ee := cmsgs(k.oob[:oobn])
			if ts != 0 && ee != nil && ee.Origin == unix.SO_EE_ORIGIN_TIMESTAMPING && ee.Info == unix.SCM_TSTAMP_SCHED {
				k.pending[ee.Data] = toMono(ts)
			}
		}
	})
	ts := k.pending[key]
	if ts != 0 {
		delete(k.pending, key)
	}
	if len(k.pending) > 64 { // stamps nobody asked for (writes without an ID)
		clear(k.pending)
	}
	return ts
}

// cmsgs reads control messages: the software stamp (scm_timestamping
// ts[0], CLOCK_REALTIME ns; 0 if none) and, on an error-queue message, its
// sock_extended_err (nil if none).
func cmsgs(oob []byte) (stamp int64, ee *unix.SockExtendedErr) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, nil
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPING && len(m.Data) >= 16:
			stamp = int64(binary.NativeEndian.Uint64(m.Data[0:]))*1e9 + int64(binary.NativeEndian.Uint64(m.Data[8:]))
		case (m.Header.Level == unix.SOL_IP && m.Header.Type == unix.IP_RECVERR ||
			m.Header.Level == unix.SOL_IPV6 && m.Header.Type == unix.IPV6_RECVERR) && len(m.Data) >= 16:
			ee = &unix.SockExtendedErr{
				Errno:  binary.NativeEndian.Uint32(m.Data[0:]),
				Origin: m.Data[4], Type: m.Data[5], Code: m.Data[6],
				Info: binary.NativeEndian.Uint32(m.Data[8:]),
				Data: binary.NativeEndian.Uint32(m.Data[12:]),
			}
		}
	}
	return stamp, ee
}

// toMono moves a CLOCK_REALTIME instant to CLOCK_MONOTONIC.
func toMono(real int64) int64 {
	var ts unix.Timespec
	m0 := clock.Now()
	if unix.ClockGettime(unix.CLOCK_REALTIME, &ts) != nil {
		return 0
	}
	m1 := clock.Now()
	return real - (ts.Nano() - (m0+m1)/2)
}

// await is tx for a write just made, waiting briefly for a stamp TCP did
// not take inside the write call (it sends later when the window is full).
func (k *kstamps) await(key uint32) int64 {
	for i := 0; i < 100; i++ {
		if ts := k.tx(key); ts != 0 {
			return ts
		}
		runtime.Gosched()
	}
	return 0
}
