package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Test topology helpers. Everything is made with netlink and netns (no ip
// or tc binaries: these tests also run in the busybox VM), named hsp-*, and
// removed by t.Cleanup; stale copies from a killed run are removed first.

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_BPF, CAP_NET_ADMIN): run as root")
	}
}

// newNetns creates the named namespace hsp-NAME and returns its path.
func newNetns(t testing.TB, name string) string {
	t.Helper()
	name = "hsp-" + name
	_ = netns.DeleteNamed(name)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		ns, err := netns.NewNamed(name)
		if err != nil {
			netns.Set(orig)
			errc <- err
			return
		}
		ns.Close()
		if err := netns.Set(orig); err != nil {
			errc <- err
			return // thread discarded
		}
		orig.Close()
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() { _ = netns.DeleteNamed(name) })
	path := "/var/run/netns/" + name
	h := mustHandle(t, path)
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustHandle(t testing.TB, path string) *netlink.Handle {
	t.Helper()
	h, err := handleAt(path)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// pod is a namespace with one end of a veth pair.
type pod struct {
	ns   string // netns path
	dev  string
	addr net.IP
}

// newPair makes two namespaces joined by a veth pair, 198.18.250.1 and .2.
func newPair(t testing.TB, a, b string) (pod, pod) {
	t.Helper()
	pa, pb := newNetns(t, a), newNetns(t, b)
	nsB, err := netns.GetFromPath(pb)
	if err != nil {
		t.Fatal(err)
	}
	defer nsB.Close()
	ha, hb := mustHandle(t, pa), mustHandle(t, pb)
	defer ha.Close()
	defer hb.Close()
	da, db := "hsp-"+a+"0", "hsp-"+b+"0"
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: da}, PeerName: db, PeerNamespace: netlink.NsFd(int(nsB))}
	if err := ha.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	A := pod{pa, da, net.IPv4(198, 18, 250, 1)}
	B := pod{pb, db, net.IPv4(198, 18, 250, 2)}
	for _, x := range []struct {
		h *netlink.Handle
		p pod
	}{{ha, A}, {hb, B}} {
		l, err := x.h.LinkByName(x.p.dev)
		if err != nil {
			t.Fatal(err)
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: x.p.addr, Mask: net.CIDRMask(24, 32)}}
		if err := x.h.AddrAdd(l, addr); err != nil {
			t.Fatal(err)
		}
		if err := x.h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	return A, B
}

// listenIn opens a TCP listener inside the namespace at path: a socket
// belongs to the namespace it was created in, whatever thread uses it.
func listenIn(t testing.TB, path, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := inNetns(path, func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, path, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func dialIn(ctx context.Context, path, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(path, func() error {
		var err error
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp4", addr)
		return err
	})
	return c, err
}

// clientIn is an HTTP client whose connections are made inside path.
func clientIn(path string) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialIn(ctx, path, addr)
		},
		MaxIdleConnsPerHost: 4,
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// tcpProxy forwards every connection accepted on ln to upstream (dialled in
// ns), byte for byte: a minimal sidecar stand-in.
func tcpProxy(t testing.TB, ln net.Listener, ns, upstream string) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := dialIn(context.Background(), ns, upstream)
				if err != nil {
					return
				}
				defer u.Close()
				done := make(chan struct{}, 2)
				go func() { copyConn(u, c); done <- struct{}{} }()
				go func() { copyConn(c, u); done <- struct{}{} }()
				<-done
			}()
		}
	}()
}

func copyConn(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			return
		}
	}
}

// leftovers lists hopscope filters and clsact qdiscs on the devices of the
// namespaces given.
func leftovers(t testing.TB, where map[string][]string) []string {
	t.Helper()
	var out []string
	for path, devs := range where {
		h := mustHandle(t, path)
		for _, dev := range devs {
			l, err := h.LinkByName(dev)
			if err != nil {
				continue // gone with its namespace
			}
			qs, _ := h.QdiscList(l)
			for _, q := range qs {
				if q.Type() == "clsact" {
					out = append(out, fmt.Sprintf("clsact qdisc on %s in %s", dev, path))
				}
			}
			for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
				fs, _ := h.FilterList(l, parent)
				for _, f := range fs {
					if bf, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(bf.Name, FilterPrefix) {
						out = append(out, fmt.Sprintf("filter %s on %s in %s", bf.Name, dev, path))
					}
				}
			}
		}
		h.Close()
	}
	return out
}

// loadedPrograms counts loaded programs named hopscope_tc that use the
// ring buffer with ID ring: the programs of one Probe, not of another
// process's probe running at the same time.
func loadedPrograms(t testing.TB, ring ebpf.MapID) int {
	n := 0
	id := ebpf.ProgramID(0)
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return n
		}
		if err != nil {
			t.Logf("list programs: %v", err)
			return n
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		if info, err := p.Info(); err == nil && info.Name == "hopscope_tc" {
			if maps, ok := info.MapIDs(); ok && slices.Contains(maps, ring) {
				n++
			}
		}
		p.Close()
	}
}

// ringID is the ID of p's ring buffer, for loadedPrograms after p closes.
func ringID(t testing.TB, p *Probe) ebpf.MapID {
	info, err := p.events.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}
