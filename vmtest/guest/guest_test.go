package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/hopscope/hopscope/spawn"
)

// allocEnv makes the test binary, re-executed into a cgroup, a child that
// touches this many MiB, burns some CPU and exits (see TestMain).
const allocEnv = "HSV_ALLOC_MIB"

// childCPU is how much CPU time the child burns after its allocation, so
// that cpu.stat has something to count.
const childCPU = 200 * time.Millisecond

func TestMain(m *testing.M) {
	if v := os.Getenv(allocEnv); v != "" {
		os.Exit(child(v))
	}
	os.Exit(m.Run())
}

// child runs already inside the cgroup (spawn joined it before the exec),
// and prints the CPU time it spent from here on, in microseconds: a lower
// bound for the cgroup's usage. Its wait4 rusage, which also counts the
// trampoline before the join, is the upper bound.
func child(mib string) int {
	n, err := strconv.Atoi(mib)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad", allocEnv, mib)
		return 2
	}
	start := ownCPU()
	buf := make([]byte, n<<20)
	for i := 0; i < len(buf); i += os.Getpagesize() {
		buf[i] = 1 // fault every page in: the cgroup is charged
	}
	for burned := ownCPU(); ownCPU()-burned < childCPU; {
	}
	runtime.KeepAlive(buf)
	fmt.Println((ownCPU() - start).Microseconds())
	return 0
}

func ownCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// inVM skips a test that describes the vmtest VM anywhere else.
func inVM(t *testing.T) {
	t.Helper()
	if os.Getenv("HOPSCOPE_VM") != "1" {
		t.Skip("checks the vmtest VM (Debian 6.1 kernel, pure cgroup v2, no TCX): runs under `make vmtest`, where HOPSCOPE_VM=1")
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) to make namespaces and load BPF programs")
	}
}

func TestSelftest(t *testing.T) {
	if os.Getenv("HOPSCOPE_VMTEST_SELFTEST") != "fail" {
		t.Skip("fails only on request: VMTEST_SELFTEST=fail make vmtest proves a failing test fails make vmtest")
	}
	t.Fatal("deliberate failure (VMTEST_SELFTEST=fail): make vmtest must exit non-zero")
}

// TestKernelIsTheOneBooted: the guest runs the kernel run.sh chose (Debian
// 12's 6.1, or a suite's newer one with VMTEST_KERNEL_SUITE).
func TestKernelIsTheOneBooted(t *testing.T) {
	inVM(t)
	rel := release(t)
	t.Logf("kernel %s", rel)
	if want := os.Getenv("HOPSCOPE_VM_KERNEL"); rel != want {
		t.Errorf("kernel %s, want %s (the vmlinuz run.sh booted)", rel, want)
	}
}

func release(t *testing.T) string {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	return unix.ByteSliceToString(u.Release[:])
}

// mount is one line of /proc/self/mountinfo, the fields the tests use.
type mount struct{ point, fstype string }

func mounts(t *testing.T) []mount {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var ms []mount
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		// id parent major:minor root point options [optional...] - fstype source super
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+1 >= len(f) {
			t.Fatalf("mountinfo line not understood: %q", line)
		}
		ms = append(ms, mount{point: f[4], fstype: f[sep+1]})
	}
	return ms
}

func TestCgroup2Alone(t *testing.T) {
	inVM(t)
	var v2 []string
	for _, m := range mounts(t) {
		switch m.fstype {
		case "cgroup":
			t.Errorf("cgroup v1 hierarchy mounted at %s: the VM must have cgroup v2 alone", m.point)
		case "cgroup2":
			v2 = append(v2, m.point)
		}
	}
	if len(v2) != 1 || v2[0] != "/sys/fs/cgroup" {
		t.Errorf("cgroup2 mounted at %v, want exactly /sys/fs/cgroup", v2)
	}
	ctl, err := os.ReadFile("/sys/fs/cgroup/cgroup.subtree_control")
	if err != nil {
		t.Fatal(err)
	}
	have := strings.Fields(string(ctl))
	for _, want := range []string{"cpu", "memory"} {
		if !contains(have, want) {
			t.Errorf("controller %s not enabled for children: cgroup.subtree_control = %q", want, have)
		}
	}
}

// TestCgroupMemoryPeakAndCPU runs a child that touches 32 MiB and burns
// 200 ms of CPU in a fresh cgroup (joined through spawn), then reads what
// the sampler reads: memory.peak and cpu.stat usage_usec.
func TestCgroupMemoryPeakAndCPU(t *testing.T) {
	inVM(t)
	const mib = 32 // page faults are slow under emulation: 64 MiB take seconds
	dir := "/sys/fs/cgroup/hopscope-test-vmtest-peak"
	os.Remove(dir) // a leftover of a killed run
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeCgroup(t, dir) })

	if _, err := os.Stat(filepath.Join(dir, "memory.peak")); err != nil {
		t.Fatalf("memory.peak missing in a child cgroup: %v", err)
	}
	cmd, err := spawn.Command(context.Background(), spawn.Options{Cgroups: []string{dir}}, os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(cmd.Env, allocEnv+"="+strconv.Itoa(mib)) // keep spawn's instructions
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	inside, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatalf("child printed %q, want its CPU time in usec", out)
	}
	total := (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Microseconds()

	peak := readInt(t, filepath.Join(dir, "memory.peak"))
	t.Logf("memory.peak = %d bytes (%.1f MiB) after a child touched %d MiB", peak, float64(peak)/(1<<20), mib)
	if peak < mib<<20 || peak > (mib+64)<<20 {
		t.Errorf("memory.peak = %d bytes, want between %d MiB and %d MiB", peak, mib, mib+64)
	}
	usage := statField(t, filepath.Join(dir, "cpu.stat"), "usage_usec")
	t.Logf("cpu.stat usage_usec = %d; the child spent %d usec inside the cgroup, %d in all (wait4)", usage, inside, total)
	if usage < inside*95/100 || usage > total*105/100 {
		t.Errorf("cpu.stat usage_usec = %d, want between 95%% of the %d usec spent inside and 105%% of the %d usec in all", usage, inside, total)
	}
}

func TestRingbufAndSchedCLS(t *testing.T) {
	needRoot(t)
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		t.Errorf("ring buffer map: %v", err)
	}
	if err := features.HaveProgramType(ebpf.SchedCLS); err != nil {
		t.Errorf("sched_cls programs: %v", err)
	}
}

// TestTCX: TCX exists from Linux 6.6 on. On 6.1 the probe must take the
// clsact fallback; on 6.12 both modes run.
func TestTCX(t *testing.T) {
	inVM(t)
	var major, minor int
	fmt.Sscanf(release(t), "%d.%d", &major, &minor)
	want := major > 6 || major == 6 && minor >= 6
	prog := passProgram(t, nil)
	lnk, err := link.AttachTCX(link.TCXOptions{Program: prog, Attach: ebpf.AttachTCXIngress, Interface: 1})
	switch {
	case err == nil:
		lnk.Close()
		if !want {
			t.Fatalf("TCX attach to lo succeeded on %d.%d: TCX came with 6.6", major, minor)
		}
		t.Logf("TCX present on %d.%d", major, minor)
	case !want && errors.Is(err, ebpf.ErrNotSupported):
		t.Logf("TCX absent as it should be on %d.%d: %v", major, minor, err)
	default:
		t.Fatalf("TCX attach on %d.%d: %v", major, minor, err)
	}
}

// TestClsactSeesPackets attaches a cls_bpf filter (direct action) to a
// clsact qdisc on lo of a new network namespace, sends UDP datagrams over
// it, and counts them in the program: the attach path the probe takes on
// kernels without TCX. It also makes a bridge and a veth pair there.
func TestClsactSeesPackets(t *testing.T) {
	needRoot(t)
	ns := newNetns(t)
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: lo.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := h.QdiscAdd(qdisc); err != nil {
		t.Fatalf("add clsact qdisc (sch_ingress): %v", err)
	}
	counter, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer counter.Close()
	prog := passProgram(t, counter)
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: lo.Attrs().Index, Parent: netlink.HANDLE_MIN_INGRESS,
			Handle: netlink.MakeHandle(0, 1), Protocol: unix.ETH_P_ALL, Priority: 1,
		},
		Fd: prog.FD(), Name: "hsv-count", DirectAction: true,
	}
	if err := h.FilterAdd(filter); err != nil {
		t.Fatalf("add bpf filter (cls_bpf): %v", err)
	}

	const sent = 5
	err = inNetns(ns, func() error {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer c.Close()
		for i := 0; i < sent; i++ {
			if _, err := c.WriteTo([]byte("hsv"), c.LocalAddr()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	if err := counter.Lookup(uint32(0), &n); err != nil {
		t.Fatal(err)
	}
	t.Logf("the clsact ingress program counted %d packets on lo for %d datagrams sent", n, sent)
	if n < sent {
		t.Errorf("counted %d packets, want at least %d", n, sent)
	}

	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "hsv-br0"}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatalf("add bridge: %v", err)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "hsv-a"}, PeerName: "hsv-b"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatalf("add veth pair: %v", err)
	}
	a, err := h.LinkByName("hsv-a")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetMaster(a, br); err != nil {
		t.Fatalf("enslave veth to bridge: %v", err)
	}
	for _, name := range []string{"hsv-br0", "hsv-a", "hsv-b"} {
		l, err := h.LinkByName(name)
		if err == nil {
			err = h.LinkSetUp(l)
		}
		if err != nil {
			t.Fatalf("set %s up: %v", name, err)
		}
	}
}

// passProgram loads a sched_cls program that returns TC_ACT_UNSPEC, and
// first adds one to counter[0] when counter is given.
func passProgram(t *testing.T, counter *ebpf.Map) *ebpf.Program {
	t.Helper()
	var insns asm.Instructions
	if counter != nil {
		insns = append(insns,
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, counter.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.Mov.Imm(asm.R1, 1),
			asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		)
	}
	insns = append(insns,
		asm.Mov.Imm(asm.R0, -1).WithSymbol("out"), // TC_ACT_UNSPEC: never change the packet's fate
		asm.Return(),
	)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "GPL", Instructions: insns})
	if err != nil {
		t.Fatalf("load sched_cls program: %v", err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

// newNetns makes an unnamed network namespace, gone with its last handle:
// nothing of it outlives the test, even after kill -9.
func newNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	var ns netns.NsHandle
	err := inThread(func() error {
		var err error
		ns, err = netns.New()
		return err
	})
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

func inNetns(ns netns.NsHandle, f func() error) error {
	return inThread(func() error {
		if err := netns.Set(ns); err != nil {
			return err
		}
		return f()
	})
}

// inThread runs f on a locked thread that is thrown away afterwards, so a
// namespace switch made in f never leaks to other goroutines.
func inThread(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		errc <- f()
	}()
	return <-errc
}

func removeCgroup(t *testing.T, dir string) {
	var err error
	for i := 0; i < 50; i++ { // the last task may take a moment to leave
		if err = os.Remove(dir); err == nil || os.IsNotExist(err) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("remove cgroup %s: %v", dir, err)
}

func readInt(t *testing.T, path string) int64 {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

func statField(t *testing.T, path, key string) int64 {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == key {
			v, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatalf("%s %s: %v", path, key, err)
			}
			return v
		}
	}
	t.Fatalf("%s has no %s", path, key)
	return 0
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
