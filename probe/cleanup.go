package probe

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// CleanupOptions says which leftovers Cleanup removes.
type CleanupOptions struct {
	// Stale limits removal to filters whose owning process is gone (what
	// every Start does). Otherwise every hopscope filter is removed, also a
	// running probe's.
	Stale bool
	// Netns lists namespace files to search; empty means the caller's own,
	// every /var/run/netns entry and every process's namespace.
	Netns []string
}

// Cleanup removes hopscope's clsact filters (named FilterPrefix+PID) and
// then any clsact qdisc left empty by that removal; nothing else is
// touched. TCX links need no cleanup: they vanish with their process. It
// returns how many filters it removed.
func Cleanup(opts CleanupOptions) (int, error) {
	paths := opts.Netns
	if len(paths) == 0 {
		paths = allNetns()
	}
	removed := 0
	var errs []error
	for _, p := range paths {
		n, err := cleanupNetns(p, opts.Stale)
		removed += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// allNetns lists one path per distinct network namespace it can find.
func allNetns() []string {
	seen := map[nsKey]bool{}
	var out []string
	add := func(p string) {
		k, err := netnsKey(p)
		if err != nil || seen[k] {
			return
		}
		seen[k] = true
		out = append(out, p)
	}
	add("/proc/self/ns/net")
	named, _ := filepath.Glob("/var/run/netns/*")
	for _, p := range named {
		add(p)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	for _, p := range procs {
		add(p)
	}
	return out
}

func cleanupNetns(path string, stale bool) (int, error) {
	if path == "/proc/self/ns/net" {
		path = ""
	}
	h, err := handleAt(path)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return 0, fmt.Errorf("list links in %q: %w", path, err)
	}
	removed := 0
	var errs []error
	for _, l := range links {
		n := 0
		for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
			fs, err := h.FilterList(l, parent)
			if err != nil {
				continue // no clsact on this link
			}
			for _, f := range fs {
				bf, ok := f.(*netlink.BpfFilter)
				if !ok || !strings.HasPrefix(bf.Name, FilterPrefix) {
					continue
				}
				if stale && ownerAlive(bf.Name) {
					continue
				}
				if err := h.FilterDel(bf); err != nil && !errors.Is(err, unix.ENOENT) {
					errs = append(errs, fmt.Errorf("delete filter %s on %s: %w", bf.Name, l.Attrs().Name, err))
					continue
				}
				n++
			}
		}
		if n > 0 && clsactEmpty(h, l) {
			_ = h.QdiscDel(clsactQdisc(l.Attrs().Index))
		}
		removed += n
	}
	return removed, errors.Join(errs...)
}

func ownerAlive(name string) bool {
	pid, err := strconv.Atoi(strings.TrimPrefix(name, FilterPrefix))
	if err != nil || pid <= 0 {
		return false
	}
	if pid == os.Getpid() {
		return true
	}
	err = unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

func clsactEmpty(h *netlink.Handle, l netlink.Link) bool {
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		fs, err := h.FilterList(l, parent)
		if err != nil || len(fs) > 0 {
			return false
		}
	}
	return true
}
