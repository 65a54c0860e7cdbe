package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/hopscope/hopscope/target"
)

// Range is the address range lab pods use: the benchmarking range.
var Range = netip.MustParsePrefix("198.18.0.0/15")

// NetnsDir is where named network namespaces are bound (as iproute2 does).
const NetnsDir = "/var/run/netns"

// Aliases mark what the lab made, so cleanup finds it by name alone.
const (
	podAliasPrefix    = "hopscope-pod:"
	labPodAliasPrefix = "hopscope-lab-pod:" // a pod that Up made
	bridgeAliasPrefix = "hopscope-bridge:"
)

// Pod is a network namespace with lo up and a veth pair: the pod side is
// Device ("eth0") with Addr, the host side HostPeer is attached to the
// bridge of Addr's subnet, whose address (the subnet's last host) is the
// pod's default gateway.
type Pod struct {
	Name      string       // the namespace's name
	NetnsPath string       // /var/run/netns/Name
	Device    string       // "eth0"
	HostPeer  string       // host end of the veth
	Bridge    string       // host bridge HostPeer is attached to
	Addr      netip.Prefix // Device's address and subnet
	Gateway   netip.Addr   // the bridge's address

	mu    sync.Mutex
	procs []*Proc
}

// shortHash is 8 hex digits naming kernel objects whose names are limited
// to 15 bytes.
func shortHash(s string) string {
	h := fnv.New32a()
	h.Write([]byte(s))
	return fmt.Sprintf("%08x", h.Sum32())
}

// HostPeerName is the host-side veth name of the pod called name.
func HostPeerName(name string) string { return "hsv" + shortHash(name) }

// BridgeName is the bridge shared by pods of subnet p.
func BridgeName(p netip.Prefix) string {
	p = p.Masked()
	a := p.Addr().As4()
	return fmt.Sprintf("hsbr%08x%02x", binary.BigEndian.Uint32(a[:]), p.Bits())
}

// gatewayOf is the last host address of p: the bridge's.
func gatewayOf(p netip.Prefix) netip.Addr {
	p = p.Masked()
	a := p.Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(a[:], v-1)
	return netip.AddrFrom4(a)
}

func checkPodArgs(name string, addr netip.Prefix) error {
	if name == "" || strings.ContainsAny(name, "/ \t\n") || len(name) > 200 {
		return fmt.Errorf("pod name %q: want a non-empty name without '/' or spaces", name)
	}
	if !addr.IsValid() || !addr.Addr().Is4() {
		return fmt.Errorf("pod %s: address %v: want an IPv4 prefix such as 198.18.0.2/24", name, addr)
	}
	if !Range.Contains(addr.Addr()) || addr.Bits() < Range.Bits() || addr.Bits() > 30 {
		return fmt.Errorf("pod %s: address %v: want an address inside %v with a prefix length from /15 to /30", name, addr, Range)
	}
	if addr.Addr() == addr.Masked().Addr() || addr.Addr() == gatewayOf(addr) || addr.Addr() == gatewayOf(addr).Next() {
		return fmt.Errorf("pod %s: address %v is the subnet's network, gateway (%v) or broadcast address: pick another", name, addr, gatewayOf(addr))
	}
	return nil
}

// NewPod makes the pod called name with address addr (inside 198.18.0.0/15).
// It fails if a namespace of that name already exists: remove leftovers with
// Cleanup or DeletePod first.
func NewPod(ctx context.Context, name string, addr netip.Prefix) (p *Pod, err error) {
	if err := checkPodArgs(name, addr); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("making a pod needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN): run with sudo")
	}
	p = &Pod{
		Name:      name,
		NetnsPath: filepath.Join(NetnsDir, name),
		Device:    "eth0",
		HostPeer:  HostPeerName(name),
		Bridge:    BridgeName(addr),
		Addr:      addr,
		Gateway:   gatewayOf(addr),
	}
	if _, err := os.Stat(p.NetnsPath); err == nil {
		return nil, fmt.Errorf("pod %s: namespace %s already exists: remove it (hopscope lab down, or ip netns del %s)", name, p.NetnsPath, name)
	}
	if _, err := netlink.LinkByName(p.HostPeer); err == nil {
		return nil, fmt.Errorf("pod %s: interface %s already exists: remove it (hopscope lab down, or ip link del %s)", name, p.HostPeer, p.HostPeer)
	}
	br, err := ensureBridge(addr)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			DeletePod(name)
		}
	}()
	ns, err := newNamedNetns(name)
	if err != nil {
		return nil, fmt.Errorf("pod %s: create network namespace: %w", name, err)
	}
	defer ns.Close()

	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: p.HostPeer, MasterIndex: br.Attrs().Index},
		PeerName:      p.Device,
		PeerNamespace: netlink.NsFd(int(ns)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("pod %s: create veth %s: %w", name, p.HostPeer, err)
	}
	host, err := netlink.LinkByName(p.HostPeer)
	if err != nil {
		return nil, fmt.Errorf("pod %s: find veth %s: %w", name, p.HostPeer, err)
	}
	if err := netlink.LinkSetAlias(host, podAliasPrefix+name); err != nil {
		return nil, fmt.Errorf("pod %s: label veth %s: %w", name, p.HostPeer, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return nil, fmt.Errorf("pod %s: set %s up: %w", name, p.HostPeer, err)
	}

	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("pod %s: netlink in namespace: %w", name, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return nil, fmt.Errorf("pod %s: set lo up: %w", name, err)
	}
	eth, err := h.LinkByName(p.Device)
	if err != nil {
		return nil, fmt.Errorf("pod %s: find %s: %w", name, p.Device, err)
	}
	ipn := &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}
	if err := h.AddrAdd(eth, &netlink.Addr{IPNet: ipn}); err != nil {
		return nil, fmt.Errorf("pod %s: add address %v: %w", name, addr, err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return nil, fmt.Errorf("pod %s: set %s up: %w", name, p.Device, err)
	}
	route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: p.Gateway.AsSlice()}
	if err := h.RouteAdd(route); err != nil {
		return nil, fmt.Errorf("pod %s: default route via %v: %w", name, p.Gateway, err)
	}
	return p, nil
}

// newNamedNetns creates and binds a named namespace without moving the
// caller: the thread that creates it is returned to its namespace.
func newNamedNetns(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return netns.None(), err
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name)
	if err != nil {
		if netns.Set(orig) != nil {
			panic("lab: cannot return thread to its network namespace")
		}
		return netns.None(), err
	}
	if err := netns.Set(orig); err != nil {
		panic("lab: cannot return thread to its network namespace")
	}
	return ns, nil
}

// ensureBridge returns the bridge of addr's subnet, making it (with the
// subnet's last host address, up) on first use.
func ensureBridge(addr netip.Prefix) (netlink.Link, error) {
	name := BridgeName(addr)
	if l, err := netlink.LinkByName(name); err == nil {
		return l, nil
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create bridge %s: %w", name, err)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find bridge %s: %w", name, err)
	}
	gw := gatewayOf(addr)
	netlink.LinkSetAlias(l, bridgeAliasPrefix+addr.Masked().String())
	ipn := &net.IPNet{IP: gw.AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil && !errors.Is(err, os.ErrExist) {
		netlink.LinkDel(l)
		return nil, fmt.Errorf("bridge %s: add address %v: %w", name, gw, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		netlink.LinkDel(l)
		return nil, fmt.Errorf("bridge %s: set up: %w", name, err)
	}
	return l, nil
}

// deleteBridgeIfUnused removes a lab bridge that no interface is attached to.
func deleteBridgeIfUnused(l netlink.Link) error {
	if !strings.HasPrefix(l.Attrs().Alias, bridgeAliasPrefix) {
		return nil
	}
	links, err := netlink.LinkList()
	if err != nil {
		return err
	}
	for _, o := range links {
		if o.Attrs().MasterIndex == l.Attrs().Index {
			return nil
		}
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete bridge %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// Close stops the pod's processes and removes its cgroups, veth and
// namespace, and its bridge if no other pod uses it.
func (p *Pod) Close() error {
	p.mu.Lock()
	procs := p.procs
	p.procs = nil
	p.mu.Unlock()
	var errs []error
	for _, pr := range procs {
		if err := pr.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := DeletePod(p.Name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// DeletePod removes the pod called name whether or not this process made
// it: every process left in its namespace is killed, then its veth, its
// namespace and its bridge if unused. Missing pieces are not an error.
func DeletePod(name string) error {
	var errs []error
	path := filepath.Join(NetnsDir, name)
	if _, err := os.Stat(path); err == nil {
		for _, pid := range pidsInNetns(path) {
			killPID(pid, 2*time.Second)
		}
	}
	if l, err := netlink.LinkByName(HostPeerName(name)); err == nil {
		var br netlink.Link
		if m := l.Attrs().MasterIndex; m != 0 {
			br, _ = netlink.LinkByIndex(m)
		}
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("delete veth %s: %w", l.Attrs().Name, err))
		}
		if br != nil {
			if err := deleteBridgeIfUnused(br); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if _, err := os.Stat(path); err == nil {
		if err := netns.DeleteNamed(name); err != nil {
			// A bind mount that is already gone leaves a plain file.
			if rerr := os.Remove(path); rerr != nil {
				errs = append(errs, fmt.Errorf("delete namespace %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Target is what the probe and sampler watch of this pod; the lab fills in
// ports, cgroups and role.
func (p *Pod) Target() target.Target {
	return target.Target{
		Name:      p.Name,
		NetnsPath: p.NetnsPath,
		Device:    p.Device,
		HostPeer:  p.HostPeer,
	}
}

// IP is the pod's address on Device.
func (p *Pod) IP() netip.Addr { return p.Addr.Addr() }

// Dial connects to addr from inside the pod's namespace.
func (p *Pod) Dial(ctx context.Context, addr string) (net.Conn, error) {
	return dialIn(ctx, p.NetnsPath, addr)
}

// Listen listens on addr inside the pod's namespace (for tests and tools
// that serve from the calling process).
func (p *Pod) Listen(addr string) (net.Listener, error) {
	var ln net.Listener
	err := inNetns(p.NetnsPath, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	return ln, err
}

// inNetns runs f on a thread switched into the namespace at path. Sockets
// made by f stay in that namespace.
func inNetns(path string, f func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open namespace %s: %w", path, err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter namespace %s: %w", path, err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime discards it when this
		// goroutine ends, so no other goroutine runs in the wrong namespace.
		return errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", path, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

func dialIn(ctx context.Context, path, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(path, func() error {
		// net.Dialer makes the socket on this goroutine's thread.
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		return err
	})
	return c, err
}
