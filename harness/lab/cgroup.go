package lab

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/hopscope/hopscope/sampler"
)

// hierarchies returns the root directories of the cgroup hierarchies a lab
// process joins (those package sampler reads).
func hierarchies() ([]string, error) { return sampler.CgroupDirs("/") }

// makeCgroup creates rel (e.g. "/hopscope/lab/client-proxy") in every
// hierarchy and returns the absolute directories, for spawn.Options.Cgroups.
func makeCgroup(rel string) ([]string, error) { return sampler.MakeCgroup(rel) }

// removeCgroup removes rel and everything below it in every hierarchy.
// Cgroups that still hold processes cannot go: the error says which.
func removeCgroup(rel string) error { return sampler.RemoveCgroup(rel) }

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
