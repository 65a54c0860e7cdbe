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

// rawConnReader is an io.Reader over a RawConn.
type rawConnReader struct {
	rc  syscall.RawConn
	raw bool
}

func (r rawConnReader) Read(p []byte) (int, error) {
	var n int
	var errno syscall.Errno
	err := r.rc.Read(func(fd uintptr) bool {
		for {
			n, errno = sysRead(fd, p, r.raw)
			if errno != unix.EINTR {
				return errno != unix.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, errno
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

// writeAll writes p through rc, waiting on the poller if the socket buffer
// is full.
func writeAll(rc syscall.RawConn, p []byte, raw bool) error {
	var errno syscall.Errno
	err := rc.Write(func(fd uintptr) bool {
		for len(p) > 0 {
			n, e := sysWrite(fd, p, raw)
			switch e {
			case 0:
				p = p[n:]
			case unix.EINTR:
			case unix.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	if err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}
