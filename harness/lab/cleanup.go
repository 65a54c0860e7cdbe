package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// All, given to Cleanup, removes every lab.
const All = "all"

// Cleanup removes what the lab called name made, whether or not the process
// that made it still runs: processes in its cgroups and namespaces, its
// pods (namespaces, veths, and their bridge once unused), nftables tables
// (they live in the pods' namespaces), its cgroups under every
// /hopscope*/<name>, and its state directory. Cleanup(All) does so for every
// lab that has a state directory or a labelled veth, then removes unused
// lab bridges. Nothing missing is an error: it is idempotent.
func Cleanup(name string) error {
	if name == All {
		return cleanupAll(func(string) bool { return true })
	}
	if !nameRE.MatchString(name) {
		return fmt.Errorf("lab name %q: want lowercase letters, digits and '-'", name)
	}
	var errs []error
	cgs := labCgroups(name)
	// Processes first: a namespace or cgroup with a process in it cannot go.
	for _, cg := range cgs {
		for _, pid := range cgroupPIDs(cg) {
			killPID(pid, 2*time.Second)
		}
	}
	for _, pod := range []string{"client", "server"} {
		if err := DeletePod(name + "-" + pod); err != nil {
			errs = append(errs, err)
		}
	}
	for _, cg := range cgs {
		if err := removeCgroup(cg); err != nil {
			errs = append(errs, err)
		}
		removeEmptyParents(cg)
	}
	if err := os.RemoveAll(filepath.Join(StateDir, name)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cleanupAll cleans up every leftover lab whose name keep accepts, then
// removes unused lab bridges.
func cleanupAll(keep func(string) bool) error {
	var errs []error
	for _, n := range leftoverLabs() {
		if !keep(n) {
			continue
		}
		if err := Cleanup(n); err != nil {
			errs = append(errs, err)
		}
	}
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Alias, bridgeAliasPrefix) {
				if err := deleteBridgeIfUnused(l); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// labCgroups lists /hopscope*/<name> where it exists in any hierarchy.
func labCgroups(name string) []string {
	roots, _ := hierarchies()
	seen := map[string]bool{}
	var out []string
	for _, r := range roots {
		ents, _ := os.ReadDir(r)
		for _, e := range ents {
			if !e.IsDir() || !strings.HasPrefix(e.Name(), "hopscope") {
				continue
			}
			rel := "/" + e.Name() + "/" + name
			if _, err := os.Stat(filepath.Join(r, rel)); err == nil && !seen[rel] {
				seen[rel] = true
				out = append(out, rel)
			}
		}
	}
	return out
}

// leftoverLabs names the labs that left a state directory or a labelled veth.
func leftoverLabs() []string {
	seen := map[string]bool{}
	var out []string
	add := func(n string) {
		if nameRE.MatchString(n) && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, n := range Labs() {
		add(n)
	}
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			pod, ok := strings.CutPrefix(l.Attrs().Alias, labPodAliasPrefix)
			if !ok {
				continue
			}
			for _, suf := range []string{"-client", "-server"} {
				if n, ok := strings.CutSuffix(pod, suf); ok {
					add(n)
				}
			}
		}
	}
	return out
}

// podsOnBridge names the pods (by veth alias) attached to the bridge.
func podsOnBridge(bridge string) ([]string, error) {
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return nil, nil
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			n := l.Attrs().Alias
			for _, p := range []string{labPodAliasPrefix, podAliasPrefix} {
				n = strings.TrimPrefix(n, p)
			}
			if n == "" {
				n = l.Attrs().Name
			}
			out = append(out, n)
		}
	}
	return out, nil
}

// inCgroup reports whether pid is in the cgroup rel (any hierarchy).
func inCgroup(pid int, rel string) bool { return cgroupCount(pid, rel) > 0 }

// cgroupCount is the number of hierarchies in which pid is in rel.
func cgroupCount(pid int, rel string) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.SplitN(line, ":", 3); len(f) == 3 && f[2] == rel {
			n++
		}
	}
	return n
}

func relabel(link, alias string) error {
	l, err := netlink.LinkByName(link)
	if err == nil {
		err = netlink.LinkSetAlias(l, alias)
	}
	if err != nil {
		return fmt.Errorf("label %s: %w", link, err)
	}
	return nil
}
