package target

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// PodLinks finds, in the network namespace at netnsPath, the pod's device
// (eth0 if there is one, else its first veth, else its first other non-lo
// link) and, through the veth's peer index, the host-side peer in the
// caller's own namespace (the node's, for an agent with hostNetwork). peer is
// empty when the device is not a veth or its peer is not in the caller's
// namespace.
func PodLinks(netnsPath string) (device, peer string, err error) {
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return "", "", fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return "", "", fmt.Errorf("netlink in %s: %w", netnsPath, err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return "", "", fmt.Errorf("list links in %s: %w", netnsPath, err)
	}
	var dev netlink.Link
	for _, l := range links {
		a := l.Attrs()
		if a.Name == "lo" || a.Flags&0x8 != 0 { // IFF_LOOPBACK
			continue
		}
		switch {
		case a.Name == "eth0":
			dev = l
		case dev == nil:
			dev = l
		case dev.Type() != "veth" && l.Type() == "veth" && dev.Attrs().Name != "eth0":
			dev = l
		}
	}
	if dev == nil {
		return "", "", fmt.Errorf("netns %s has no device but lo", netnsPath)
	}
	device = dev.Attrs().Name
	if dev.Type() != "veth" || dev.Attrs().ParentIndex == 0 {
		return device, "", nil
	}
	// IFLA_LINK of a veth is its peer's ifindex in the peer's namespace;
	// check the host link points back, since indexes repeat across netns.
	host, err := netlink.LinkByIndex(dev.Attrs().ParentIndex)
	if err != nil || host.Type() != "veth" || host.Attrs().ParentIndex != dev.Attrs().Index {
		return device, "", nil
	}
	return device, host.Attrs().Name, nil
}
