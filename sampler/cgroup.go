package sampler

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	cgroups "github.com/containerd/cgroups/v3"
)

// Mode is how the host mounts its cgroups.
type Mode int

const (
	// Unavailable: no cgroup filesystem at /sys/fs/cgroup.
	Unavailable Mode = iota
	// Legacy: cgroup v1 hierarchies only.
	Legacy
	// Hybrid: v1 hierarchies plus cgroup v2 at /sys/fs/cgroup/unified,
	// where memory stays on v1 and v2 has only the core files (cpu.stat).
	Hybrid
	// Unified: cgroup v2 only.
	Unified
)

func (m Mode) String() string {
	switch m {
	case Legacy:
		return "legacy"
	case Hybrid:
		return "hybrid"
	case Unified:
		return "unified"
	}
	return "unavailable"
}

// MarshalText makes a Mode read as its name in JSON.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// DetectMode reports the host's cgroup mode (containerd/cgroups' detection).
func DetectMode() (Mode, error) {
	var m Mode
	switch cgroups.Mode() {
	case cgroups.Legacy:
		m = Legacy
	case cgroups.Hybrid:
		m = Hybrid
	case cgroups.Unified:
		m = Unified
	default:
		return Unavailable, errors.New("no cgroup filesystem at /sys/fs/cgroup: mount one (mount -t cgroup2 none /sys/fs/cgroup)")
	}
	return m, nil
}

// hierarchies are the cgroup mounts of this host, from /proc/self/mountinfo.
type hierarchies struct {
	mode Mode
	v2   string            // cgroup2 mount point; "" if none
	v1   map[string]string // v1 controller (memory, cpuacct, ...) -> mount point
}

func loadHierarchies() (*hierarchies, error) {
	mode, err := DetectMode()
	if err != nil {
		return nil, err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("find cgroup mounts: %w", err)
	}
	defer f.Close()
	h := &hierarchies{mode: mode, v1: map[string]string{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 25 0:31 / /sys/fs/cgroup/memory rw,relatime shared:15 - cgroup cgroup rw,memory
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		mnt := unescapeMount(pf[4])
		switch qf[0] {
		case "cgroup2":
			// Prefer the mount under /sys/fs/cgroup (a bind mount elsewhere
			// is the same hierarchy).
			if h.v2 == "" || strings.HasPrefix(mnt, "/sys/fs/cgroup") && !strings.HasPrefix(h.v2, "/sys/fs/cgroup") {
				h.v2 = mnt
			}
		case "cgroup":
			for _, opt := range strings.Split(qf[2], ",") {
				if _, seen := h.v1[opt]; !seen || strings.HasPrefix(mnt, "/sys/fs/cgroup") {
					h.v1[opt] = mnt
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read /proc/self/mountinfo: %w", err)
	}
	if mode == Legacy {
		h.v2 = "" // a stray cgroup2 mount is not where the kernel's controllers are
	}
	if h.v2 == "" && h.v1["memory"] == "" && h.v1["cpuacct"] == "" {
		return nil, fmt.Errorf("no cgroup v2 mount and no v1 memory or cpuacct hierarchy in /proc/self/mountinfo (mode %s)", mode)
	}
	return h, nil
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// location is one cgroup in each hierarchy that matters to the sampler;
// a field is empty where that hierarchy is not used on this host.
type location struct {
	rel     string // relative to every hierarchy's root, "/a/b"
	v2      string // cgroup v2 directory
	memory  string // v1 memory directory (legacy, hybrid)
	cpuacct string // v1 cpuacct directory (legacy, hybrid)
}

func (l location) dirs() []string {
	var out []string
	for _, d := range []string{l.v2, l.memory, l.cpuacct} {
		if d != "" {
			out = append(out, d)
		}
	}
	return out
}

// locate turns a cgroup name (relative, or absolute under a hierarchy's mount
// point) into its directories. It does not check that they exist.
func (h *hierarchies) locate(cg string) (location, error) {
	if strings.TrimSpace(cg) == "" {
		return location{}, errors.New("empty cgroup path: give one relative to the cgroup root (/hopscope/lab/proxy) or under /sys/fs/cgroup")
	}
	rel := cg
	if strings.HasPrefix(cg, "/sys/fs/cgroup") || h.isUnderMount(cg) {
		mnt := h.mountOf(cg)
		if mnt == "" {
			return location{}, fmt.Errorf("%s is not a cgroup: not under a cgroup hierarchy (mounted: %s)", cg, strings.Join(h.mounts(), ", "))
		}
		rel = strings.TrimPrefix(filepath.Clean(cg), mnt)
	}
	rel = filepath.Clean("/" + rel)
	if strings.Contains(rel, "/../") || strings.HasSuffix(rel, "/..") {
		return location{}, fmt.Errorf("cgroup path %s leaves the hierarchy", cg)
	}
	l := location{rel: rel}
	switch h.mode {
	case Unified:
		l.v2 = filepath.Join(h.v2, rel)
	case Hybrid, Legacy:
		if h.v2 != "" {
			l.v2 = filepath.Join(h.v2, rel)
		}
		if m := h.v1["memory"]; m != "" {
			l.memory = filepath.Join(m, rel)
		}
		if m := h.v1["cpuacct"]; m != "" {
			l.cpuacct = filepath.Join(m, rel)
		}
	}
	return l, nil
}

func (h *hierarchies) mounts() []string {
	var out []string
	if h.v2 != "" {
		out = append(out, h.v2)
	}
	seen := map[string]bool{}
	for _, m := range h.v1 {
		if !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out
}

func (h *hierarchies) isUnderMount(p string) bool { return h.mountOf(p) != "" }

// mountOf returns the longest hierarchy mount point that holds p.
func (h *hierarchies) mountOf(p string) string {
	p = filepath.Clean(p)
	best := ""
	for _, m := range h.mounts() {
		if (p == m || strings.HasPrefix(p, m+"/")) && len(m) > len(best) {
			best = m
		}
	}
	return best
}

// CgroupDirs returns the absolute directories of the cgroup rel that must
// exist, and that a process must join, for the sampler to read its CPU and
// memory: on a unified host the one v2 directory; on a hybrid host the v2
// directory (CPU) plus the v1 memory and cpuacct directories; on a legacy
// host the v1 ones. rel is relative to the hierarchy root ("/hopscope/lab1/
// server-proxy"); an absolute path under a hierarchy's mount point is
// accepted too. Pass the result to spawn.Options{Cgroups: dirs}.
func CgroupDirs(rel string) ([]string, error) {
	h, err := loadHierarchies()
	if err != nil {
		return nil, err
	}
	l, err := h.locate(rel)
	if err != nil {
		return nil, err
	}
	return l.dirs(), nil
}

// MakeCgroup creates the cgroup rel in every hierarchy CgroupDirs names and
// returns those directories. On cgroup v2 it enables the cpu and memory
// controllers (those the parent offers) in each ancestor's
// cgroup.subtree_control, so memory.current and memory.peak exist. An
// existing cgroup is kept.
func MakeCgroup(rel string) (dirs []string, err error) {
	h, err := loadHierarchies()
	if err != nil {
		return nil, err
	}
	l, err := h.locate(rel)
	if err != nil {
		return nil, err
	}
	if l.rel == "/" {
		return nil, errors.New("cgroup path is the root: name a cgroup below it (/hopscope/NAME)")
	}
	if l.v2 != "" && h.mode == Unified {
		if err := makeV2(h.v2, l.rel); err != nil {
			return nil, fmt.Errorf("make cgroup %s: %w", l.rel, err)
		}
	} else if l.v2 != "" {
		// Hybrid: v2 holds no controllers worth enabling; cpu.stat is core.
		if err := mkdir(l.v2); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{l.memory, l.cpuacct} {
		if d == "" {
			continue
		}
		if err := mkdir(d); err != nil {
			return nil, err
		}
	}
	return l.dirs(), nil
}

func mkdir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("create cgroup %s: permission denied: run as root", dir)
		}
		return fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	return nil
}

// makeV2 creates mount/rel level by level, enabling cpu and memory for the
// children of each level on the way down.
func makeV2(mount, rel string) error {
	dir := mount
	for _, part := range strings.Split(strings.Trim(rel, "/"), "/") {
		if err := enableControllers(dir, "cpu", "memory"); err != nil {
			return err
		}
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return mkdir(dir) // for its message
		}
	}
	return nil
}

// enableControllers writes +c to dir's cgroup.subtree_control for each wanted
// controller dir offers and has not enabled yet.
func enableControllers(dir string, want ...string) error {
	avail, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("read %s: %w", filepath.Join(dir, "cgroup.controllers"), err)
	}
	on, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return fmt.Errorf("read %s: %w", filepath.Join(dir, "cgroup.subtree_control"), err)
	}
	var add []string
	for _, c := range want {
		if hasWord(string(avail), c) && !hasWord(string(on), c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	p := filepath.Join(dir, "cgroup.subtree_control")
	if err := os.WriteFile(p, []byte(strings.Join(add, " ")), 0); err != nil {
		switch {
		case errors.Is(err, fs.ErrPermission):
			return fmt.Errorf("enable %s in %s: permission denied: run as root", strings.Join(add, " "), p)
		case isBusy(err):
			return fmt.Errorf("enable %s in %s: %w (a cgroup with processes of its own cannot enable controllers for its children: move them to a child cgroup)", strings.Join(add, " "), p, err)
		}
		return fmt.Errorf("enable %s in %s: %w", strings.Join(add, " "), p, err)
	}
	return nil
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

// RemoveCgroup removes the cgroup rel, and any cgroups below it, from every
// hierarchy. A cgroup already gone is not an error; one that still holds
// processes is (after waiting up to 2 s for exiting ones to leave).
func RemoveCgroup(rel string) error {
	h, err := loadHierarchies()
	if err != nil {
		return err
	}
	l, err := h.locate(rel)
	if err != nil {
		return err
	}
	if l.rel == "/" {
		return errors.New("refusing to remove the cgroup root")
	}
	var errs []error
	for _, d := range l.dirs() {
		if err := removeTree(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func removeTree(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := os.Remove(dir)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		// Busy with live processes: say which, at once. Busy with none
		// listed: exiting tasks are still leaving; wait a little.
		procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if p := strings.Fields(string(procs)); len(p) > 0 {
			return fmt.Errorf("remove cgroup %s: still holds processes %s: %w", dir, strings.Join(p, " "), err)
		}
		if !errors.Is(err, os.ErrExist) && !isBusy(err) || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
