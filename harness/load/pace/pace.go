// Package pace sleeps until a CLOCK_MONOTONIC instant with microsecond
// precision. Go's own timers wake through epoll_wait, whose timeout is whole
// milliseconds, so time.Sleep(300µs) can take a millisecond; a timerfd armed
// at an absolute CLOCK_MONOTONIC time and read through Go's netpoller wakes
// when the kernel's high-resolution timer fires, without holding a thread
// or a P while it waits, and without spinning. It must not be used where a
// millisecond does not matter: each sleep costs two syscalls.
package pace

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hopscope/hopscope/clock"
)

// Timer is one timerfd; it is not safe for concurrent use.
type Timer struct {
	f   *os.File
	buf [8]byte
}

// NewTimer opens a timerfd on CLOCK_MONOTONIC (the clock of clock.Now).
func NewTimer() (*Timer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	// A non-blocking fd handed to os.NewFile is registered with the netpoller,
	// so Read parks the goroutine instead of blocking the thread.
	return &Timer{f: os.NewFile(uintptr(fd), "timerfd")}, nil
}

// SleepUntil returns at or after the CLOCK_MONOTONIC instant t (ns). It
// returns at once if t has passed.
func (t *Timer) SleepUntil(at int64) error {
	if at <= clock.Now() {
		return nil
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(at)}
	var fd int
	sc, err := t.f.SyscallConn()
	if err != nil {
		return err
	}
	_ = sc.Control(func(f uintptr) { fd = int(f) })
	if err := unix.TimerfdSettime(fd, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
		return fmt.Errorf("timerfd_settime: %w", err)
	}
	for {
		_, err := t.f.Read(t.buf[:])
		if err == nil || !errors.Is(err, unix.EAGAIN) {
			return err
		}
	}
}

// Close releases the timerfd.
func (t *Timer) Close() error { return t.f.Close() }

// Ticker fires at start, start+period, start+2*period, ... (CLOCK_MONOTONIC
// ns). Armed once, it costs one read per wake-up: the open-loop schedule
// waits on it instead of re-arming a timer for every request.
type Ticker struct {
	f   *os.File
	rc  syscall.RawConn
	buf [8]byte
}

// NewTicker arms a periodic timerfd. period must be positive.
func NewTicker(start, period int64) (*Ticker, error) {
	if period <= 0 {
		return nil, fmt.Errorf("ticker period %d ns: must be positive", period)
	}
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(start), Interval: unix.NsecToTimespec(period)}
	if err := unix.TimerfdSettime(fd, unix.TFD_TIMER_ABSTIME, &spec, nil); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("timerfd_settime: %w", err)
	}
	t := &Ticker{f: os.NewFile(uintptr(fd), "timerfd")}
	if t.rc, err = t.f.SyscallConn(); err != nil {
		t.f.Close()
		return nil, err
	}
	return t, nil
}

// WaitUntil returns once the clock has reached at, waking on the ticks up to
// it: at should be one of the tick instants (a later at just waits more
// ticks). It returns an error if the ticker was closed meanwhile.
func (t *Ticker) WaitUntil(at int64) error {
	for clock.Now() < at {
		err := t.rc.Read(func(fd uintptr) bool {
			// A raw read: entersyscall would wake the runtime's sysmon
			// thread on every tick (see package load's raw.go).
			_, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&t.buf[0])), 8)
			return e != unix.EAGAIN && e != unix.EINTR
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Close stops the ticker; a WaitUntil in progress returns an error.
func (t *Ticker) Close() error { return t.f.Close() }
