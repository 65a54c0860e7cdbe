package sampler

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kfile is a kernel file (cgroup or /proc) kept open and re-read from offset
// 0 at each sample: one pread instead of open+read+close, which is most of
// what sampling 100 cgroups at 10 Hz costs.
type kfile struct {
	path string
	fd   int
	buf  []byte
}

func openK(path string) (*kfile, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return &kfile{path: path, fd: fd, buf: make([]byte, 512)}, nil
}

// read returns the whole file; the slice is valid until the next read.
//
// The pread is a raw system call, without the runtime's entersyscall: a
// cgroup or /proc file is generated in memory and never blocks for long,
// and entersyscall wakes the runtime's sysmon thread, which then polls every
// 20 µs for a while. At 1,000 reads a second (100 cgroups at 10 Hz) that
// polling was a tenth of the sampler's CPU.
func (f *kfile) read() ([]byte, error) {
	for {
		n, _, e := unix.RawSyscall6(unix.SYS_PREAD64, uintptr(f.fd), uintptr(unsafe.Pointer(&f.buf[0])), uintptr(len(f.buf)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return nil, &fs.PathError{Op: "read", Path: f.path, Err: e}
		}
		if int(n) < len(f.buf) {
			return f.buf[:n], nil
		}
		f.buf = make([]byte, 2*len(f.buf))
	}
}

func (f *kfile) close() {
	if f != nil && f.fd >= 0 {
		unix.Close(f.fd)
		f.fd = -1
	}
}

// readInt reads a file that holds one number.
func (f *kfile) readInt() (int64, error) {
	b, err := f.read()
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", f.path, err)
	}
	return v, nil
}

// field returns the value of "key value" in a flat-keyed file (cpu.stat,
// memory.stat, memory.events), or false.
func field(b []byte, key string) (int64, bool) {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(line) > len(key) && line[len(key)] == ' ' && string(line[:len(key)]) == key {
			v, err := strconv.ParseInt(string(bytes.TrimSpace(line[len(key)+1:])), 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// psiTotal returns the total= of the "some" or "full" line of a PSI file.
func psiTotal(b []byte, kind string) (int64, bool) {
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		if !bytes.HasPrefix(line, []byte(kind+" ")) {
			continue
		}
		for _, f := range bytes.Fields(line) {
			if v, ok := bytes.CutPrefix(f, []byte("total=")); ok {
				n, err := strconv.ParseInt(string(v), 10, 64)
				return n, err == nil
			}
		}
	}
	return 0, false
}

// gone reports whether err says the file's cgroup or process no longer
// exists: kernfs answers ENODEV on a removed cgroup, /proc ESRCH or ENOENT.
func gone(err error) bool {
	return errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ESRCH)
}

func isBusy(err error) bool { return errors.Is(err, syscall.EBUSY) }
