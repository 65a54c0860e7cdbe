package load

import (
	"io"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The hot path's socket reads and writes are raw system calls made through
// the connection's RawConn, so Go's netpoller still parks the goroutine on
// EAGAIN, but without the runtime's entersyscall: that call wakes the sysmon
// thread from its deep sleep whenever the process was idle, and a woken
// sysmon polls every 20 µs for a millisecond. At a few thousand requests a
// second that polling cost more CPU than the requests themselves. Reads and
// writes on a non-blocking socket return at once, so a raw call never holds
// its P for long.

// In a closed loop the process is never idle, sysmon never sleeps, and raw
// calls only cost: a thread preempted inside one holds its P, where
// entersyscall would let another thread run the other connections.

// sysRead reads what is there into p.
func sysRead(fd uintptr, p []byte, raw bool) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	call := unix.Syscall
	if raw {
		call = unix.RawSyscall
	}
	n, _, e := call(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

// sysWrite writes what it can of p.
func sysWrite(fd uintptr, p []byte, raw bool) (int, syscall.Errno) {
	call := unix.Syscall
	if raw {
		call = unix.RawSyscall
	}
	n, _, e := call(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

// rawConnReader is an io.Reader over a RawConn. The callback handed to
// RawConn.Read is bound once: a closure made per call would escape to the
// heap on every read.
type rawConnReader struct {
	rc    syscall.RawConn
	raw   bool
	p     []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

func newRawConnReader(rc syscall.RawConn, raw bool) *rawConnReader {
	r := &rawConnReader{rc: rc, raw: raw}
	r.fn = r.read
	return r
}

func (r *rawConnReader) read(fd uintptr) bool {
	for {
		r.n, r.errno = sysRead(fd, r.p, r.raw)
		if r.errno != unix.EINTR {
			return r.errno != unix.EAGAIN
		}
	}
}

func (r *rawConnReader) Read(p []byte) (int, error) {
	r.p = p
	err := r.rc.Read(r.fn)
	r.p = nil
	switch {
	case err != nil:
		return 0, err
	case r.errno != 0:
		return 0, r.errno
	case r.n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return r.n, nil
}

// rawConnWriter writes whole buffers through a RawConn, waiting on the
// poller when the socket buffer is full; its callback is bound once too.
type rawConnWriter struct {
	rc    syscall.RawConn
	raw   bool
	p     []byte
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

func newRawConnWriter(rc syscall.RawConn, raw bool) *rawConnWriter {
	w := &rawConnWriter{rc: rc, raw: raw}
	w.fn = w.write
	return w
}

func (w *rawConnWriter) write(fd uintptr) bool {
	for len(w.p) > 0 {
		n, e := sysWrite(fd, w.p, w.raw)
		switch e {
		case 0:
			w.p = w.p[n:]
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			w.errno = e
			return true
		}
	}
	return true
}

// writeAll writes p.
func (w *rawConnWriter) writeAll(p []byte) error {
	w.p, w.errno = p, 0
	err := w.rc.Write(w.fn)
	w.p = nil
	if err != nil {
		return err
	}
	if w.errno != 0 {
		return w.errno
	}
	return nil
}
