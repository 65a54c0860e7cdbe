package sampler

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/hopscope/hopscope/bpf"
)

// Readers: how the sampler reads a tick's CPU usage and current memory.
const (
	// ReaderBPF reads them for all cgroups of a hierarchy in one pass of a
	// BPF cgroup iterator (bpf/cgstat.c; kernel >= 6.1, root, BTF).
	ReaderBPF = "bpf-iter"
	// ReaderFiles reads each cgroup's cpu.stat and memory file.
	ReaderFiles = "files"
)

// A batch reads, in one read() per hierarchy, what a quick tick needs of
// every cgroup source: CPU usage (cgroup v2 cpu.stat's usage_usec) and
// current memory (memory.current, or v1 memory.usage_in_bytes). The figures
// are the same kernel counters the files print; the files are still read at
// every StatInterval (peak, working set, OOM, user/system) and for a source
// the walk did not see (a removed cgroup then fails there, with its path).
//
// Why: on this 2-core VM a cold pread of a cgroup file cost 4.5 to 7.5 µs,
// most of it in the generic path (fdget, kernfs, seq_file, vsnprintf), so
// two files per cgroup at 10 Hz for 100 cgroups were 1.1% of a core before
// any parsing. The iterator walks the kernel's cgroup tree instead.
type batch struct {
	objs     bpf.CgstatObjects
	walks    map[string]*walk // hierarchy mount point -> its walk
	vals     map[bkey]bval
	buf      []byte
	pageSize int64
}

// bkey names a cgroup in a batch: its hierarchy's mount point and its ID
// (its directory's inode number; IDs repeat across hierarchies).
type bkey struct {
	mount string
	id    uint64
}

type bval struct {
	cpuNs    int64
	memBytes int64 // none without a memory controller there
	flushed  bool  // CPU figures are current (rstat flushed first)
}

// walk is one iterator link over a cgroup subtree.
type walk struct {
	root string // the directory walked, with its descendants
	link int    // BPF link fd
}

// newBatch loads the iterator program; the error says what is missing.
func newBatch() (*batch, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the BPF cgroup iterator needs root (CAP_BPF and CAP_PERFMON)")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return nil, errors.New("the BPF cgroup iterator needs kernel BTF (/sys/kernel/btf/vmlinux)")
	}
	b := &batch{walks: map[string]*walk{}, vals: map[bkey]bval{}, buf: make([]byte, 32<<10), pageSize: int64(os.Getpagesize())}
	if err := bpf.LoadCgstatObjects(&b.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			err = fmt.Errorf("%v (%d lines of verifier log left out)", ve.Cause, len(ve.Log))
		}
		return nil, fmt.Errorf("load the BPF cgroup iterator (kernel >= 6.1 with cgroup iterators): %w", err)
	}
	return b, nil
}

// plan makes one walk per hierarchy over the deepest directory that holds
// all of that hierarchy's wanted cgroups (dirs: mount -> cgroup dirs),
// keeping walks whose root has not changed.
func (b *batch) plan(dirs map[string][]string) error {
	for mount, w := range b.walks {
		if root := commonDir(dirs[mount]); root != w.root {
			unix.Close(w.link)
			delete(b.walks, mount)
		}
	}
	for mount, ds := range dirs {
		if len(ds) == 0 || b.walks[mount] != nil {
			continue
		}
		root := commonDir(ds)
		fd, err := b.link(root)
		if err != nil {
			return err
		}
		b.walks[mount] = &walk{root: root, link: fd}
	}
	return nil
}

// commonDir is the deepest directory that holds every dir in ds.
func commonDir(ds []string) string {
	if len(ds) == 0 {
		return ""
	}
	c := filepath.Clean(ds[0])
	for _, d := range ds[1:] {
		d = filepath.Clean(d)
		for c != "/" && d != c && !strings.HasPrefix(d, c+"/") {
			c = filepath.Dir(c)
		}
	}
	return c
}

// The iterator's link attributes (BPF_LINK_CREATE with a
// bpf_iter_link_info.cgroup), which cilium/ebpf's link package does not
// offer for cgroup iterators.
type iterLinkAttr struct {
	progFd, targetFd, attachType, flags uint32
	iterInfo                            uint64
	iterInfoLen                         uint32
	_                                   uint32
}

type cgroupIterInfo struct {
	order, cgroupFd uint32
	cgroupID        uint64
}

const (
	bpfLinkCreate        = 28
	bpfIterCreate        = 33
	cgroupIterDescendant = 2 // BPF_CGROUP_ITER_DESCENDANTS_PRE: the root first
)

// link makes an iterator link over root and its descendants.
func (b *batch) link(root string) (int, error) {
	cfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s for the cgroup iterator: %w", root, err)
	}
	defer unix.Close(cfd)
	info := cgroupIterInfo{order: cgroupIterDescendant, cgroupFd: uint32(cfd)}
	attr := iterLinkAttr{progFd: uint32(b.objs.CgstatIter.FD()), attachType: uint32(ebpf.AttachTraceIter),
		iterInfo: uint64(uintptr(unsafe.Pointer(&info))), iterInfoLen: uint32(unsafe.Sizeof(info))}
	fd, _, e := unix.Syscall(unix.SYS_BPF, bpfLinkCreate, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if e != 0 {
		return -1, fmt.Errorf("cgroup iterator over %s: link: %w", root, e)
	}
	return int(fd), nil
}

// recSize is the size of struct cgstat in bpf/cgstat.c.
const recSize = 32

// read runs every walk once and replaces the batch's values.
func (b *batch) read() error {
	clear(b.vals)
	for mount, w := range b.walks {
		attr := [2]uint32{uint32(w.link), 0}
		fd, _, e := unix.RawSyscall(unix.SYS_BPF, bpfIterCreate, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		if e != 0 {
			return fmt.Errorf("cgroup iterator over %s: %w", w.root, e)
		}
		n, err := readAll(int(fd), &b.buf)
		unix.Close(int(fd))
		if err != nil {
			return fmt.Errorf("cgroup iterator over %s: read: %w", w.root, err)
		}
		for p := b.buf[:n]; len(p) >= recSize; p = p[recSize:] {
			flags := binary.LittleEndian.Uint32(p[24:])
			v := bval{cpuNs: int64(binary.LittleEndian.Uint64(p[8:])), memBytes: none, flushed: flags&2 != 0}
			if flags&1 != 0 {
				v.memBytes = int64(binary.LittleEndian.Uint64(p[16:])) * b.pageSize
			}
			b.vals[bkey{mount, binary.LittleEndian.Uint64(p)}] = v
		}
	}
	return nil
}

// readAll reads fd to its end into *buf (grown as needed), with raw system
// calls (see kfile.read); it returns the length read.
func readAll(fd int, buf *[]byte) (int, error) {
	n := 0
	for {
		if n == len(*buf) {
			*buf = append(*buf, make([]byte, len(*buf))...)
		}
		m, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&(*buf)[n])), uintptr(len(*buf)-n))
		switch {
		case e == unix.EINTR || e == unix.EAGAIN:
			continue
		case e != 0:
			return n, syscall.Errno(e)
		case m == 0:
			return n, nil
		}
		n += int(m)
	}
}

func (b *batch) close() {
	for _, w := range b.walks {
		unix.Close(w.link)
	}
	b.walks = nil
	b.objs.Close()
}

// cgroupID is the ID the iterator reports for a cgroup directory: its inode
// number.
func cgroupID(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}
