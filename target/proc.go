package target

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ContainerID is a container as the kubelet names it in a pod's status
// ("containerd://<64 hex>", "cri-o://<64 hex>").
type ContainerID struct {
	Runtime string // "containerd" or "cri-o"
	ID      string // 64 lowercase hex digits
}

func (c ContainerID) String() string { return c.Runtime + "://" + c.ID }

// ErrNoContainerID means the kubelet has not reported a container ID yet:
// the container is still being created.
var ErrNoContainerID = errors.New("no container ID yet (container not started)")

// ParseContainerID parses a container ID from a pod's containerStatuses.
// Runtimes other than containerd and CRI-O are refused with the reason: their
// cgroup names are not ones this package knows how to find.
func ParseContainerID(s string) (ContainerID, error) {
	if s == "" {
		return ContainerID{}, ErrNoContainerID
	}
	rt, id, ok := strings.Cut(s, "://")
	if !ok {
		return ContainerID{}, fmt.Errorf("container ID %q: want <runtime>://<64 hex digits> (containerd:// or cri-o://)", s)
	}
	switch rt {
	case "containerd", "cri-o":
	case "docker":
		return ContainerID{}, fmt.Errorf("container ID %q: the docker runtime (dockershim, cri-dockerd) is not supported: need containerd or CRI-O", s)
	default:
		return ContainerID{}, fmt.Errorf("container ID %q: unknown runtime %q: need containerd:// or cri-o://", s, rt)
	}
	if len(id) != 64 || !isLowerHexString(id) {
		return ContainerID{}, fmt.Errorf("container ID %q: %s IDs are 64 lowercase hex digits", s, rt)
	}
	return ContainerID{Runtime: rt, ID: id}, nil
}

func isLowerHexString(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Process is one process of a container, with its cgroup paths as
// /proc/PID/cgroup gives them (relative to each hierarchy's root).
type Process struct {
	PID int
	// Unified is the cgroup v2 path ("0::" line), empty on pure v1 hosts.
	Unified string
	// V1 maps each v1 controller ("memory", "cpu", "name=systemd") to its path.
	V1 map[string]string
}

// Cgroup is the path a sampler should read: the v2 path where the container
// is in a v2 cgroup of its own, else the v1 memory controller's, else any v1
// path that names the container.
func (p Process) Cgroup(id ContainerID) string {
	if p.Unified != "" && cgroupNames(p.Unified, id) {
		return p.Unified
	}
	if m, ok := p.V1["memory"]; ok && cgroupNames(m, id) {
		return m
	}
	keys := make([]string, 0, len(p.V1))
	for k := range p.V1 {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if cgroupNames(p.V1[k], id) {
			return p.V1[k]
		}
	}
	return p.Unified
}

// cgroupNames reports whether a cgroup path is the container's own cgroup,
// as the runtimes name it:
//
//	containerd, systemd driver: .../kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope
//	containerd, cgroupfs driver: /kubepods/burstable/pod<uid>/<id>
//	CRI-O, systemd driver:       .../crio-<id>.scope (not crio-conmon-<id>.scope, its monitor)
//	CRI-O, cgroupfs driver:      /kubepods/burstable/pod<uid>/crio-<id>
//
// CRI-O with systemd may add a sub-cgroup ("crio-<id>.scope/container"), so
// a parent element naming the container counts too.
func cgroupNames(path string, id ContainerID) bool {
	elems := strings.Split(path, "/")
	for i := len(elems) - 1; i >= 0 && i >= len(elems)-2; i-- {
		switch elems[i] {
		case id.ID, "cri-containerd-" + id.ID + ".scope", "crio-" + id.ID + ".scope", "crio-" + id.ID:
			return true
		}
	}
	return false
}

// ParseCgroupFile parses /proc/PID/cgroup: v1 lines ("4:memory:/path",
// "1:cpu,cpuacct:/path", "9:name=systemd:/path") and the v2 line ("0::/path").
func ParseCgroupFile(data string) (unified string, v1 map[string]string, err error) {
	v1 = map[string]string{}
	for _, line := range strings.Split(data, "\n") {
		if line == "" {
			continue
		}
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			return "", nil, fmt.Errorf("cgroup line %q: want hierarchy:controllers:path", line)
		}
		if parts[0] == "0" && parts[1] == "" {
			unified = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c != "" {
				v1[c] = parts[2]
			}
		}
	}
	return unified, v1, nil
}

// FindProcesses scans procRoot/*/cgroup ("/proc" on a node; a fixture
// directory in tests) for the processes of a container. It returns them in
// PID order; none found is not an error (the container may not run yet).
func FindProcesses(procRoot string, id ContainerID) ([]Process, error) {
	var out []Process
	err := scanProc(procRoot, func(data string) bool { return strings.Contains(data, id.ID) }, func(p Process) {
		if p.names(id) {
			out = append(out, p)
		}
	})
	return out, err
}

// ScanContainers reads procRoot/*/cgroup once and indexes the processes by
// the ID of the container whose cgroup they are in (64 hex digits, without
// the runtime): one pass for every pod on the node.
func ScanContainers(procRoot string) (map[string][]Process, error) {
	out := map[string][]Process{}
	err := scanProc(procRoot, nil, func(p Process) {
		seen := map[string]bool{}
		for _, path := range append([]string{p.Unified}, mapValues(p.V1)...) {
			if id := containerOf(path); id != "" && !seen[id] {
				seen[id] = true
				out[id] = append(out[id], p)
			}
		}
	})
	return out, err
}

// containerOf returns the container ID a cgroup path names (see
// cgroupNames), or "".
func containerOf(path string) string {
	elems := strings.Split(path, "/")
	for i := len(elems) - 1; i >= 0 && i >= len(elems)-2; i-- {
		e := elems[i]
		for _, pre := range []string{"cri-containerd-", "crio-"} {
			if strings.HasPrefix(e, pre) {
				e = strings.TrimSuffix(strings.TrimPrefix(e, pre), ".scope")
				break
			}
		}
		if len(e) == 64 && isLowerHexString(e) && cgroupNames(path, ContainerID{ID: e}) {
			return e
		}
	}
	return ""
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// scanProc parses the cgroup file of every process under procRoot that
// filter keeps (nil keeps all) and visits them in PID order.
func scanProc(procRoot string, filter func(data string) bool, visit func(Process)) error {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return fmt.Errorf("scan %s: %w", procRoot, err)
	}
	var procs []Process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		data, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "cgroup"))
		if err != nil {
			continue // exited meanwhile, or a kernel thread we may not read
		}
		if filter != nil && !filter(string(data)) { // cheap, before parsing
			continue
		}
		unified, v1, err := ParseCgroupFile(string(data))
		if err != nil {
			continue
		}
		procs = append(procs, Process{PID: pid, Unified: unified, V1: v1})
	}
	sort.Slice(procs, func(i, j int) bool { return procs[i].PID < procs[j].PID })
	for _, p := range procs {
		visit(p)
	}
	return nil
}

func (p Process) names(id ContainerID) bool {
	if p.Unified != "" && cgroupNames(p.Unified, id) {
		return true
	}
	for _, path := range p.V1 {
		if cgroupNames(path, id) {
			return true
		}
	}
	return false
}

// NetnsPath is the network namespace file of a process under procRoot.
func NetnsPath(procRoot string, pid int) string {
	return filepath.Join(procRoot, strconv.Itoa(pid), "ns", "net")
}

// DefaultCgroupRoots are where hierarchies are mounted: pure v2, the v2
// part of a hybrid host, and v1 memory.
var DefaultCgroupRoots = []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory"}

// HostCgroupPath turns a cgroup path read from another process's
// /proc/PID/cgroup into one relative to the hierarchy's real root. The
// kernel writes that path relative to the reader's cgroup namespace; an
// agent in a pod with a private cgroup namespace (the default with cgroup v2)
// sees other pods' cgroups as "/../../kubepods-burstable.slice/...". Its
// own namespace root is as deep as the ".." count in /proc/1/cgroup (the
// node's init, at the real root), so the path is found by globbing that
// many levels, minus the path's own "..", above its tail. A path without
// ".." is returned as is, and so is one that matches nothing or more than
// one directory.
func HostCgroupPath(procRoot string, roots []string, path string) string {
	if !strings.HasPrefix(path, "/..") {
		return path
	}
	elems := strings.Split(strings.TrimPrefix(path, "/"), "/")
	up := 0
	for up < len(elems) && elems[up] == ".." {
		up++
	}
	tail := elems[up:]
	data, err := os.ReadFile(filepath.Join(procRoot, "1", "cgroup"))
	if err != nil {
		return path
	}
	unified, v1, err := ParseCgroupFile(string(data))
	if err != nil {
		return path
	}
	initPath := unified
	if m, ok := v1["memory"]; ok && unified == "" {
		initPath = m
	}
	depth := strings.Count(initPath+"/", "../")
	if depth < up {
		return path
	}
	found := ""
	for _, root := range roots {
		pattern := filepath.Join(append(append([]string{root}, repeat("*", depth-up)...), tail...)...)
		matches, _ := filepath.Glob(pattern)
		for _, m := range matches {
			rel := "/" + strings.TrimPrefix(strings.TrimPrefix(m, root), "/")
			if found != "" && found != rel {
				return path // ambiguous
			}
			found = rel
		}
	}
	if found == "" {
		return path
	}
	return found
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}
