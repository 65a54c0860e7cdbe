package probe

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// PointKind is where on an interface a point observes.
type PointKind uint8

const (
	DevIngress PointKind = iota + 1 // packets entering the pod
	DevEgress                       // packets leaving the pod
	// Loopback is a pod's lo, egress only: a packet on lo crosses egress and
	// then ingress of the same device microseconds apart, so one hook sees
	// every packet once.
	Loopback
)

func (k PointKind) String() string {
	switch k {
	case DevIngress:
		return "ingress"
	case DevEgress:
		return "egress"
	case Loopback:
		return "lo"
	}
	return fmt.Sprintf("kind%d", k)
}

func (k PointKind) tcxAttach() ebpf.AttachType {
	if k == DevIngress {
		return ebpf.AttachTCXIngress
	}
	return ebpf.AttachTCXEgress
}

func (k PointKind) clsactParent() uint32 {
	if k == DevIngress {
		return netlink.HANDLE_MIN_INGRESS
	}
	return netlink.HANDLE_MIN_EGRESS
}

// FilterPrefix starts the name of every cls_bpf filter hopscope adds; the
// owner's PID follows ("hopscope-4242"), so Cleanup can tell a killed
// process's leftovers from a running probe's filters.
const FilterPrefix = "hopscope-"

// filterPriority puts hopscope's filter at the head of the chain; it returns
// TC_ACT_UNSPEC, so the filters after it still run.
const filterPriority = 1

// nsKey identifies a network namespace (its nsfs inode).
type nsKey struct{ dev, ino uint64 }

func netnsKey(path string) (nsKey, error) {
	if path == "" {
		path = "/proc/self/ns/net"
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsKey{}, fmt.Errorf("network namespace %s: %w", path, err)
	}
	return nsKey{uint64(st.Dev), st.Ino}, nil
}

type attachKey struct {
	ns   nsKey
	dev  string
	kind PointKind
}

// attachment is one program attached to one interface and direction.
type attachment struct {
	key   attachKey
	netns string // path as given by the first user
	dev   string
	point uint32
	nsID  uint32
	refs  int
	prog  *ebpf.Program
	tcx   link.Link
	flt   *netlink.BpfFilter
}

type qdiscKey struct {
	ns  nsKey
	dev string
}

type attacher struct {
	p       *Probe
	logf    func(string, ...any)
	mode    Mode
	byKey   map[attachKey]*attachment
	nsIDs   map[nsKey]uint32
	qdiscs  map[qdiscKey]*qdiscUse
	next    uint32
	handles atomic.Uint32
}

type qdiscUse struct {
	created bool
	users   int
	netns   string
}

func newAttacher(p *Probe, logf func(string, ...any)) *attacher {
	return &attacher{p: p, logf: logf, byKey: map[attachKey]*attachment{},
		nsIDs: map[nsKey]uint32{}, qdiscs: map[qdiscKey]*qdiscUse{}}
}

func (a *attacher) points() int { return len(a.byKey) }

// loadProgram loads one instance of the classifier whose events carry
// point. Instances share the ring buffer, ports and counters maps; only the
// point constant differs, because an interface index is not unique across
// network namespaces and the hook direction is not visible to the program.
func (a *attacher) loadProgram(point uint32) (*ebpf.Program, error) {
	spec := a.p.spec.Copy()
	if err := spec.Variables["point_id"].Set(point); err != nil {
		return nil, err
	}
	var objs struct {
		Prog *ebpf.Program `ebpf:"hopscope_tc"`
	}
	err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		"events": a.p.events, "ports": a.p.ports, "stats": a.p.stats,
	}})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load classifier: verifier: %v", ve)
		}
		return nil, fmt.Errorf("load classifier: %w", err)
	}
	return objs.Prog, nil
}

// chooseMode resolves auto by a test attach of TCX to lo.
func (a *attacher) chooseMode(m Mode) (Mode, error) {
	if m != Auto {
		if m == TCX {
			if err := a.testTCX(); err != nil {
				return "", fmt.Errorf("attach mode tcx: %w (kernel lacks TCX, needs >= 6.6: use --mode clsact or auto)", err)
			}
		}
		a.mode = m
		return m, nil
	}
	if err := a.testTCX(); err != nil {
		// Only a kernel without TCX is a reason to fall back; a program the
		// verifier rejects or missing privileges would fail clsact too, and
		// hiding them behind "TCX unavailable" would mislead.
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return "", err
		}
		a.logf("probe: TCX unavailable (%v): falling back to clsact + cls_bpf", err)
		a.mode = Clsact
		return Clsact, nil
	}
	a.mode = TCX
	return TCX, nil
}

// testTCX loads the classifier and attaches it to lo with TCX for a moment.
// A load error is returned as it is; an attach error wraps
// ebpf.ErrNotSupported where the kernel lacks TCX.
func (a *attacher) testTCX() error {
	prog, err := a.loadProgram(0)
	if err != nil {
		return err
	}
	defer prog.Close()
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: lo.Attrs().Index, Program: prog, Attach: ebpf.AttachTCXEgress})
	if err != nil {
		return err
	}
	return l.Close()
}

func (a *attacher) acquire(nsPath, dev string, kind PointKind) (*attachment, error) {
	nk, err := netnsKey(nsPath)
	if err != nil {
		return nil, err
	}
	key := attachKey{nk, dev, kind}
	if at, ok := a.byKey[key]; ok {
		at.refs++
		return at, nil
	}
	nsID, ok := a.nsIDs[nk]
	if !ok {
		nsID = uint32(len(a.nsIDs) + 1)
		a.nsIDs[nk] = nsID
	}
	a.next++
	at := &attachment{key: key, netns: nsPath, dev: dev, point: a.next, nsID: nsID, refs: 1}
	if at.prog, err = a.loadProgram(at.point); err != nil {
		return nil, err
	}
	where := dev + " " + kind.String()
	if nsPath != "" {
		where += " in " + nsPath
	}
	switch a.mode {
	case TCX:
		err = inNetns(nsPath, func() error {
			l, err := netlink.LinkByName(dev)
			if err != nil {
				return fmt.Errorf("find %s: %w", dev, err)
			}
			at.tcx, err = link.AttachTCX(link.TCXOptions{Interface: l.Attrs().Index, Program: at.prog,
				Attach: kind.tcxAttach(), Anchor: link.Head()})
			return err
		})
		if err != nil {
			err = fmt.Errorf("attach tcx to %s: %w", where, err)
		}
	case Clsact:
		err = a.attachClsact(at, nk)
		if err != nil {
			err = fmt.Errorf("attach clsact filter to %s: %w", where, err)
		}
	}
	if err != nil {
		at.prog.Close()
		return nil, err
	}
	a.byKey[key] = at
	return at, nil
}

func (a *attacher) attachClsact(at *attachment, nk nsKey) error {
	h, err := handleAt(at.netns)
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(at.dev)
	if err != nil {
		return fmt.Errorf("find %s: %w", at.dev, err)
	}
	idx := l.Attrs().Index
	qk := qdiscKey{nk, at.dev}
	use := a.qdiscs[qk]
	if use == nil {
		use = &qdiscUse{netns: at.netns}
		has, err := hasClsact(h, l)
		if err != nil {
			return err
		}
		if !has {
			if err := h.QdiscAdd(clsactQdisc(idx)); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("add clsact qdisc: %w", err)
			}
			use.created = true
		}
		a.qdiscs[qk] = use
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: idx,
			Parent:    at.key.kind.clsactParent(),
			Handle:    uint32(os.Getpid()&0xffff)<<16 | a.handles.Add(1)&0xffff,
			Protocol:  unix.ETH_P_ALL,
			Priority:  filterPriority,
		},
		Fd:           at.prog.FD(),
		Name:         fmt.Sprintf("%s%d", FilterPrefix, os.Getpid()),
		DirectAction: true,
	}
	if err := h.FilterAdd(f); err != nil {
		if use.users == 0 {
			a.dropQdisc(h, l, qk, use)
		}
		return err
	}
	use.users++
	at.flt = f
	return nil
}

func clsactQdisc(idx int) *netlink.GenericQdisc {
	return &netlink.GenericQdisc{QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: idx, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT,
	}, QdiscType: "clsact"}
}

func hasClsact(h *netlink.Handle, l netlink.Link) (bool, error) {
	qs, err := h.QdiscList(l)
	if err != nil {
		return false, fmt.Errorf("list qdiscs of %s: %w", l.Attrs().Name, err)
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			return true, nil
		}
	}
	return false, nil
}

// dropQdisc deletes the clsact qdisc hopscope created, once unused.
func (a *attacher) dropQdisc(h *netlink.Handle, l netlink.Link, qk qdiscKey, use *qdiscUse) error {
	delete(a.qdiscs, qk)
	if !use.created {
		return nil
	}
	if err := h.QdiscDel(clsactQdisc(l.Attrs().Index)); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete clsact qdisc of %s: %w", l.Attrs().Name, err)
	}
	return nil
}

func (a *attacher) release(at *attachment) error {
	at.refs--
	if at.refs > 0 {
		return nil
	}
	delete(a.byKey, at.key)
	var err error
	switch {
	case at.tcx != nil:
		err = at.tcx.Close()
	case at.flt != nil:
		err = a.detachClsact(at)
	}
	at.prog.Close()
	if err != nil {
		return fmt.Errorf("detach from %s %s: %w", at.dev, at.key.kind, err)
	}
	return nil
}

func (a *attacher) detachClsact(at *attachment) error {
	qk := qdiscKey{at.key.ns, at.dev}
	h, err := handleAt(at.netns)
	if err != nil {
		// the namespace is gone, and its devices, filters and qdiscs with
		// it: forget them, so a new namespace reusing the inode starts clean
		if use := a.qdiscs[qk]; use != nil {
			if use.users--; use.users <= 0 {
				delete(a.qdiscs, qk)
			}
		}
		return err
	}
	defer h.Close()
	var errs []error
	if err := h.FilterDel(at.flt); err != nil && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("delete filter: %w", err))
	}
	if use := a.qdiscs[qk]; use != nil {
		use.users--
		if use.users <= 0 {
			if l, err := h.LinkByName(at.dev); err == nil {
				errs = append(errs, a.dropQdisc(h, l, qk, use))
			} else {
				delete(a.qdiscs, qk) // the device is gone, and its qdisc with it
			}
		}
	}
	return errors.Join(errs...)
}

func (a *attacher) close() error {
	var errs []error
	for _, at := range a.byKey {
		at.refs = 1
		errs = append(errs, a.release(at))
	}
	return errors.Join(errs...)
}

// handleAt returns a netlink handle in the namespace at path ("" = own).
func handleAt(path string) (*netlink.Handle, error) {
	if path == "" {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("netlink: %w", err)
		}
		return h, nil
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", path, err)
	}
	return h, nil
}

// inNetns runs fn on an OS thread switched into the namespace at path (""
// = stay). Interface indexes and TCX attachment resolve against the
// calling thread's namespace, so this is how a host process attaches inside
// a pod. If the thread cannot switch back it stays locked and dies with its
// goroutine, so no other code ever runs in the wrong namespace.
func inNetns(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("own network namespace: %w", err)
			return
		}
		defer orig.Close()
		ns, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open network namespace %s: %w", path, err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return from network namespace %s: %w", path, err))
			return // thread stays locked and is discarded
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
