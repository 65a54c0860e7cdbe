package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// hierarchies returns the cgroup mount points a lab process joins: the v2
// (unified) mount, and on hybrid hosts the v1 hierarchies that carry the
// memory, cpu and cpuacct controllers, so that the sampler can read one
// process group's CPU time and memory from whichever the host has.
func hierarchies() ([]string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 4 {
			continue
		}
		mnt, typ, opts := fl[1], fl[2], fl[3]
		want := typ == "cgroup2"
		if typ == "cgroup" {
			for _, o := range strings.Split(opts, ",") {
				if o == "memory" || o == "cpu" || o == "cpuacct" {
					want = true
				}
			}
		}
		if want && !seen[mnt] {
			seen[mnt] = true
			out = append(out, mnt)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup hierarchy mounted: mount cgroup2 on /sys/fs/cgroup")
	}
	return out, sc.Err()
}

// makeCgroup creates rel (e.g. "/hopscope/lab/client-proxy") in every
// hierarchy and returns the absolute directories, for spawn.Options.Cgroups.
func makeCgroup(rel string) ([]string, error) {
	hs, err := hierarchies()
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, h := range hs {
		d := filepath.Join(h, rel)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create cgroup %s: %w", d, err)
		}
		dirs = append(dirs, d)
	}
	return dirs, nil
}

// cgroupPIDs lists the processes in rel and below, in every hierarchy.
func cgroupPIDs(rel string) []int {
	hs, _ := hierarchies()
	seen := map[int]bool{}
	var out []int
	for _, h := range hs {
		root := filepath.Join(h, rel)
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				var pid int
				if _, err := fmt.Sscan(f, &pid); err == nil && !seen[pid] {
					seen[pid] = true
					out = append(out, pid)
				}
			}
			return nil
		})
	}
	return out
}

// removeCgroup removes rel and everything below it in every hierarchy,
// deepest first. Cgroups that still hold processes cannot go: the error says
// which.
func removeCgroup(rel string) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		root := filepath.Join(h, rel)
		var dirs []string
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// cgroupExists reports whether rel exists in any hierarchy.
func cgroupExists(rel string) bool {
	hs, _ := hierarchies()
	for _, h := range hs {
		if _, err := os.Stat(filepath.Join(h, rel)); err == nil {
			return true
		}
	}
	return false
}

// removeEmptyParents removes rel's parent directories up to (not including)
// the hierarchy root while they are empty of child cgroups.
func removeEmptyParents(rel string) {
	hs, _ := hierarchies()
	for _, h := range hs {
		for d := filepath.Dir(filepath.Join(h, rel)); len(d) > len(h); d = filepath.Dir(d) {
			if syscall.Rmdir(d) != nil {
				break
			}
		}
	}
}
