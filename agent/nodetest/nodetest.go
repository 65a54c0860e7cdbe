// Package nodetest makes, for tests, what a Kubernetes node holds for a pod:
// a network namespace joined to the host by a veth pair, and containers as
// real processes in cgroups named the way containerd and CRI-O name them
// (systemd and cgroupfs drivers), under a test-only parent cgroup. It pairs
// them with the pod objects a fake clientset serves. Everything it makes is
// removed in t.Cleanup, and leftovers of a killed earlier run are removed
// first. It needs root; it must not be used outside tests.
package nodetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/hopscope/hopscope/sampler"
	"github.com/hopscope/hopscope/spawn"
)

// Style is how a runtime and cgroup driver name a container's cgroup.
type Style int

const (
	ContainerdSystemd  Style = iota // .../kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope
	ContainerdCgroupfs              // /kubepods/burstable/pod<uid>/<id>
	CrioSystemd                     // .../kubepods-burstable-pod<uid>.slice/crio-<id>.scope
	CrioCgroupfs                    // /kubepods/burstable/pod<uid>/crio-<id>
)

func (s Style) String() string {
	return [...]string{"containerd-systemd", "containerd-cgroupfs", "crio-systemd", "crio-cgroupfs"}[s]
}

// Node is one test's fake node.
type Node struct {
	t        testing.TB
	Name     string // short, used in netns and link names
	Parent   string // the test's parent cgroup, relative ("/hopscope-test-kube-NAME")
	NodeName string
	pods     int
}

// NeedRoot skips the test when not root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to make namespaces, veths and cgroups")
	}
}

// New returns a node for the test; name is a few letters, unique per test.
func New(t testing.TB, name string) *Node {
	t.Helper()
	NeedRoot(t)
	n := &Node{t: t, Name: name, Parent: "/hopscope-test-kube-" + name, NodeName: "node-" + name}
	// Leftovers of a killed run: its processes died with it (Pdeathsig).
	for i := 0; i < 8; i++ {
		removeNetns(n.netnsName(i))
		if l, err := netlink.LinkByName(n.hostLink(i)); err == nil {
			netlink.LinkDel(l)
		}
	}
	if err := sampler.RemoveCgroup(n.Parent); err != nil {
		t.Fatalf("remove stale cgroup %s: %v", n.Parent, err)
	}
	t.Cleanup(func() {
		if err := sampler.RemoveCgroup(n.Parent); err != nil {
			t.Errorf("remove cgroup %s: %v", n.Parent, err)
		}
	})
	return n
}

func (n *Node) netnsName(i int) string { return fmt.Sprintf("hsk-%s%d", n.Name, i) }
func (n *Node) hostLink(i int) string  { return fmt.Sprintf("hsk-%s%dh", n.Name, i) }

// Pod is a pod being built: its netns and the object the fake API serves.
type Pod struct {
	n       *Node
	Index   int
	Netns   string // /var/run/netns/hsk-...
	HostIP  net.IP // host side of the veth
	PodIP   net.IP // eth0 inside
	HostDev string // host-side veth name
	UID     types.UID
	Obj     *corev1.Pod
}

// Pod makes a pod named name in namespace ns: a netns with eth0 (a veth
// whose peer is in the test's namespace) and lo up, with a /30 of
// 198.19.0.0/16 (pod side .2 of it, host side .1). hostNetwork pods get no
// netns.
func (n *Node) Pod(ns, name string, hostNetwork bool) *Pod {
	n.t.Helper()
	i := n.pods
	n.pods++
	uid := types.UID(fmt.Sprintf("a1b2c3d4-0000-4000-8000-%012d", i+1))
	p := &Pod{n: n, Index: i, UID: uid, Obj: &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: uid, Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{NodeName: n.NodeName, HostNetwork: hostNetwork},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}}
	if hostNetwork {
		return p
	}
	p.Netns = "/var/run/netns/" + n.netnsName(i)
	p.HostDev = n.hostLink(i)
	// A /30 per pod, in a /24 per node name, so that two packages' tests
	// running at once (go test without -p 1) do not share subnets.
	h := fnv.New32a()
	h.Write([]byte(n.Name))
	third := byte(100 + h.Sum32()%100) // 198.19.100-199: the lab and probe tests use 248 and up
	p.HostIP = net.IPv4(198, 19, third, byte(4*i+1))
	p.PodIP = net.IPv4(198, 19, third, byte(4*i+2))
	if err := makeNetns(n.netnsName(i), p.HostDev, p.HostIP, p.PodIP); err != nil {
		n.t.Fatalf("pod %s: %v", name, err)
	}
	n.t.Cleanup(func() {
		if l, err := netlink.LinkByName(p.HostDev); err == nil {
			netlink.LinkDel(l)
		}
		removeNetns(n.netnsName(i))
	})
	return p
}

// Container is a started container.
type Container struct {
	Name   string
	ID     string // as in the pod status: containerd://<hex> or cri-o://<hex>
	Cgroup string // relative cgroup path
	PID    int
}

// Container adds a container to the pod spec (an init container with
// restartPolicy Always when native), starts args (default: sleep) as its
// process in a cgroup named in style, inside the pod's netns, and reports it
// in the pod status. ports are the container's declared ports.
func (p *Pod) Container(name string, style Style, native bool, ports []int32, args ...string) Container {
	t := p.n.t
	t.Helper()
	id := randomID()
	c := Container{Name: name, ID: runtimePrefix(style) + id, Cgroup: p.n.Parent + cgroupPath(style, string(p.UID), id)}
	dirs, err := sampler.MakeCgroup(c.Cgroup)
	if err != nil {
		t.Fatalf("container %s: %v", name, err)
	}
	if len(args) == 0 {
		args = []string{"sleep", "600"}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd, err := spawn.Command(ctx, spawn.Options{Netns: p.Netns, Cgroups: dirs}, args[0], args[1:]...)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	c.PID = cmd.Process.Pid
	t.Cleanup(func() { cancel(); cmd.Wait() })
	waitInCgroup(t, c.PID, id)

	spec := corev1.Container{Name: name, Image: "test/" + name}
	for _, port := range ports {
		spec.Ports = append(spec.Ports, corev1.ContainerPort{ContainerPort: port})
	}
	status := corev1.ContainerStatus{Name: name, ContainerID: c.ID, Ready: true,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
	if native {
		always := corev1.ContainerRestartPolicyAlways
		spec.RestartPolicy = &always
		p.Obj.Spec.InitContainers = append(p.Obj.Spec.InitContainers, spec)
		p.Obj.Status.InitContainerStatuses = append(p.Obj.Status.InitContainerStatuses, status)
	} else {
		p.Obj.Spec.Containers = append(p.Obj.Spec.Containers, spec)
		p.Obj.Status.ContainerStatuses = append(p.Obj.Status.ContainerStatuses, status)
	}
	return c
}

// Stop kills a container's process and waits until it is gone.
func (c Container) Stop(t testing.TB) {
	syscall.Kill(c.PID, syscall.SIGKILL)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/cgroup", c.PID)); err != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitInCgroup waits until the trampoline has joined the cgroups (the
// process's cgroup file names the container) and exec'd.
func waitInCgroup(t testing.TB, pid int, id string) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err == nil && strings.Contains(string(b), id) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("process %d did not join its container cgroup", pid)
}

func runtimePrefix(s Style) string {
	if s == CrioSystemd || s == CrioCgroupfs {
		return "cri-o://"
	}
	return "containerd://"
}

func cgroupPath(s Style, uid, id string) string {
	u := strings.ReplaceAll(uid, "-", "_")
	switch s {
	case ContainerdSystemd:
		return "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice/cri-containerd-" + id + ".scope"
	case CrioSystemd:
		return "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice/crio-" + id + ".scope"
	case CrioCgroupfs:
		return "/kubepods/burstable/pod" + uid + "/crio-" + id
	default:
		return "/kubepods/burstable/pod" + uid + "/" + id
	}
}

func randomID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func removeNetns(name string) {
	netns.DeleteNamed(name)
}

// makeNetns makes a named netns with eth0 and lo up, joined to the caller's
// namespace by a veth whose host end is hostDev.
func makeNetns(name, hostDev string, hostIP, podIP net.IP) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name) // moves this thread into it
	if err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	defer ns.Close()
	if err := netns.Set(orig); err != nil {
		return err
	}
	tmp := hostDev[:len(hostDev)-1] + "p"
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostDev}, PeerName: tmp, PeerNamespace: netlink.NsFd(ns)}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth %s: %w", hostDev, err)
	}
	host, err := netlink.LinkByName(hostDev)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: &net.IPNet{IP: hostIP, Mask: net.CIDRMask(30, 32)}}); err != nil {
		return fmt.Errorf("address on %s: %w", hostDev, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return err
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return err
	}
	defer h.Close()
	pod, err := h.LinkByName(tmp)
	if err != nil {
		return err
	}
	if err := h.LinkSetName(pod, "eth0"); err != nil {
		return err
	}
	if err := h.AddrAdd(pod, &netlink.Addr{IPNet: &net.IPNet{IP: podIP, Mask: net.CIDRMask(30, 32)}}); err != nil {
		return fmt.Errorf("address on eth0 in %s: %w", name, err)
	}
	if err := h.LinkSetUp(pod); err != nil {
		return err
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	return h.LinkSetUp(lo)
}
