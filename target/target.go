package target

import (
	"fmt"
	"strconv"
	"strings"
)

// Role is what a pod does in a request's path (DESIGN.md, the hop model).
type Role string

const (
	// Client is the pod that sends requests: its proxy (if any) is the
	// client-side sidecar, listening on OutboundPort on lo.
	Client Role = "client"
	// Server is the pod that serves them: its proxy (if any) is the
	// server-side sidecar, listening on InboundPort, in front of the app on
	// AppPort.
	Server Role = "server"
)

// Target is one watched pod.
type Target struct {
	Name      string `json:"name"`      // e.g. "client", "default/emoji-7d9f"
	Namespace string `json:"namespace"` // Kubernetes namespace, empty elsewhere
	Role      Role   `json:"role"`

	// NetnsPath is the pod's network namespace (/var/run/netns/NAME or
	// /proc/PID/ns/net); empty means the caller's own namespace.
	NetnsPath string `json:"netns"`
	// Device is the pod-side interface name inside NetnsPath (eth0).
	Device string `json:"device"`
	// HostPeer is the host-side end of the pod's veth, if known.
	HostPeer string `json:"host_peer,omitempty"`
	// Loopback is the pod's lo, watched for app<->proxy traffic; "lo" when
	// the pod has a sidecar, empty when it has none (baseline).
	Loopback string `json:"loopback,omitempty"`

	// Ports. Zero means "none" (e.g. no sidecar: InboundPort 0).
	InboundPort  uint16 `json:"inbound_port,omitempty"`  // server sidecar's listen port
	OutboundPort uint16 `json:"outbound_port,omitempty"` // client sidecar's listen port (on lo)
	AppPort      uint16 `json:"app_port,omitempty"`      // app's listen port

	// Cgroups, as paths relative to the cgroup root ("/hopscope/lab/s-proxy"),
	// or absolute under /sys/fs/cgroup; empty where unknown.
	ProxyCgroup string `json:"proxy_cgroup,omitempty"`
	AppCgroup   string `json:"app_cgroup,omitempty"`
	// ProxyPID is a process of the proxy, for /proc fallbacks.
	ProxyPID int `json:"proxy_pid,omitempty"`

	// Unattributable, when set, says why this pod cannot be watched
	// (hostNetwork, no process yet); the other fields may be partial.
	Unattributable string `json:"unattributable,omitempty"`
}

// HasProxy reports whether the target has a sidecar.
func (t Target) HasProxy() bool { return t.InboundPort != 0 || t.OutboundPort != 0 }

func (t Target) String() string {
	if t.Namespace != "" {
		return t.Namespace + "/" + t.Name
	}
	return t.Name
}

// ParsePorts parses a comma-separated port list ("8080,15001").
func ParsePorts(s string) ([]uint16, error) {
	var out []uint16
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("port %q: want a number from 1 to 65535", f)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}
