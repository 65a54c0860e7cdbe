package target

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	idA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	idB = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

func TestParseContainerID(t *testing.T) {
	for _, c := range []struct {
		in, runtime, err string
	}{
		{in: "containerd://" + idA, runtime: "containerd"},
		{in: "cri-o://" + idB, runtime: "cri-o"},
		{in: "", err: "no container ID yet"},
		{in: "docker://" + idA, err: "docker runtime"},
		{in: "rkt://" + idA, err: `unknown runtime "rkt"`},
		{in: idA, err: "want <runtime>://"},
		{in: "containerd://" + idA[:12], err: "64 lowercase hex"},
		{in: "containerd://" + strings.ToUpper(idA), err: "64 lowercase hex"},
	} {
		id, err := ParseContainerID(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseContainerID(%q) = %v, want error with %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || id.Runtime != c.runtime || id.String() != c.in {
			t.Errorf("ParseContainerID(%q) = %+v, %v", c.in, id, err)
		}
	}
}

// TestFindProcessesFixtures reads /proc/PID/cgroup files as each runtime,
// driver and cgroup version writes them.
func TestFindProcessesFixtures(t *testing.T) {
	uid := "pod1b2c3d4_0000_4000_8000_000000000001"
	files := map[string]string{
		// containerd, systemd driver, cgroup v2
		"101": "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-" + uid + ".slice/cri-containerd-" + idA + ".scope\n",
		// containerd, cgroupfs driver, cgroup v1 (hybrid: v2 line is "/")
		"102": "12:memory:/kubepods/burstable/poda1b2/" + idA + "\n4:cpu,cpuacct:/kubepods/burstable/poda1b2/" + idA + "\n1:name=systemd:/kubepods/burstable/poda1b2/" + idA + "\n0::/\n",
		// CRI-O, systemd driver, v2, with the container/ sub-cgroup
		"201": "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-" + uid + ".slice/crio-" + idB + ".scope/container\n",
		// CRI-O's monitor, conmon: not the container
		"202": "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-" + uid + ".slice/crio-conmon-" + idB + ".scope\n",
		// CRI-O, cgroupfs driver, v1 only
		"203": "7:memory:/kubepods/besteffort/poda1b2/crio-" + idB + "\n3:cpuacct:/kubepods/besteffort/poda1b2/crio-" + idB + "\n",
		// the pod's cgroup itself (pause process of another runtime): no match
		"301": "0::/kubepods/burstable/poda1b2\n",
		// an unrelated process that merely mentions the ID in a longer name
		"302": "0::/user.slice/x-" + idA + "-y.scope\n",
	}
	root := t.TempDir()
	for pid, content := range files {
		os.MkdirAll(filepath.Join(root, pid), 0o755)
		if err := os.WriteFile(filepath.Join(root, pid, "cgroup"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(root, "self"), 0o755) // not a PID
	for _, c := range []struct {
		id      ContainerID
		pids    []int
		cgroups []string
	}{
		{ContainerID{"containerd", idA}, []int{101, 102}, []string{
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-" + uid + ".slice/cri-containerd-" + idA + ".scope",
			"/kubepods/burstable/poda1b2/" + idA, // v2 line is "/", so the v1 memory path
		}},
		{ContainerID{"cri-o", idB}, []int{201, 203}, []string{
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-" + uid + ".slice/crio-" + idB + ".scope/container",
			"/kubepods/besteffort/poda1b2/crio-" + idB,
		}},
	} {
		procs, err := FindProcesses(root, c.id)
		if err != nil {
			t.Fatal(err)
		}
		if len(procs) != len(c.pids) {
			t.Fatalf("%s: found %+v, want pids %v", c.id.Runtime, procs, c.pids)
		}
		for i, p := range procs {
			if p.PID != c.pids[i] || p.Cgroup(c.id) != c.cgroups[i] {
				t.Errorf("%s: process %d cgroup %q, want %d %q", c.id.Runtime, p.PID, p.Cgroup(c.id), c.pids[i], c.cgroups[i])
			}
		}
	}
	if procs, _ := FindProcesses(root, ContainerID{"containerd", strings.Repeat("9", 64)}); len(procs) != 0 {
		t.Errorf("unknown ID matched %+v", procs)
	}
	if _, err := FindProcesses(filepath.Join(root, "missing"), ContainerID{"containerd", idA}); err == nil {
		t.Error("missing /proc root: no error")
	}
}

func TestParseCgroupFileRejectsGarbage(t *testing.T) {
	if _, _, err := ParseCgroupFile("not a cgroup line\n"); err == nil {
		t.Error("garbage parsed")
	}
	u, v1, err := ParseCgroupFile("5:cpu,cpuacct:/a\n0::/b\n")
	if err != nil || u != "/b" || v1["cpu"] != "/a" || v1["cpuacct"] != "/a" {
		t.Errorf("got %q %v %v", u, v1, err)
	}
}

// TestHostCgroupPath: an agent in a private cgroup namespace reads other
// pods' cgroups as "/../.."-relative paths; they are found under the real root.
func TestHostCgroupPath(t *testing.T) {
	proc, fs := t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(proc, "1"), 0o755)
	// the agent's own cgroup is 4 levels deep: init appears 4 levels up
	os.WriteFile(filepath.Join(proc, "1", "cgroup"), []byte("0::/../../../..\n"), 0o644)
	mine := "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podaaa.slice/cri-containerd-" + idA + ".scope"
	theirs := "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podbbb.slice/cri-containerd-" + idB + ".scope"
	for _, d := range []string{mine, theirs, "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podccc.slice"} {
		os.MkdirAll(filepath.Join(fs, d), 0o755)
	}
	roots := []string{fs}
	seen := "/../../../kubepods-burstable.slice/kubepods-burstable-podbbb.slice/cri-containerd-" + idB + ".scope"
	if got := HostCgroupPath(proc, roots, seen); got != "/"+theirs {
		t.Errorf("HostCgroupPath(%q) = %q, want /%s", seen, got, theirs)
	}
	for _, p := range []string{
		"/kubepods/burstable/podx/" + idA,            // host namespace: unchanged
		"/../../../kubepods-burstable.slice/missing", // nothing there: unchanged
	} {
		if got := HostCgroupPath(proc, roots, p); got != p {
			t.Errorf("HostCgroupPath(%q) = %q, want it unchanged", p, got)
		}
	}
}

// TestScanContainersMatchesFindProcesses: the one-pass index finds what the
// per-container scan finds, on the same fixtures.
func TestScanContainersMatchesFindProcesses(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"11": "0::/kubepods.slice/kubepods-burstable.slice/x.slice/cri-containerd-" + idA + ".scope\n",
		"12": "4:memory:/kubepods/burstable/poda/" + idA + "\n0::/\n",
		"21": "0::/kubepods.slice/y.slice/crio-" + idB + ".scope/container\n",
		"22": "0::/kubepods.slice/y.slice/crio-conmon-" + idB + ".scope\n",
		"23": "3:cpuacct:/kubepods/besteffort/podb/crio-" + idB + "\n",
		"31": "0::/system.slice/sshd.service\n",
	}
	for pid, c := range files {
		os.MkdirAll(filepath.Join(root, pid), 0o755)
		os.WriteFile(filepath.Join(root, pid, "cgroup"), []byte(c), 0o644)
	}
	idx, err := ScanContainers(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(idx) != 2 {
		t.Errorf("index has %d containers, want 2: %v", len(idx), idx)
	}
	for _, id := range []ContainerID{{"containerd", idA}, {"cri-o", idB}} {
		want, _ := FindProcesses(root, id)
		got := idx[id.ID]
		if len(got) != len(want) {
			t.Fatalf("%s: index %v, scan %v", id.Runtime, got, want)
		}
		for i := range got {
			if got[i].PID != want[i].PID {
				t.Errorf("%s: index pid %d, scan pid %d", id.Runtime, got[i].PID, want[i].PID)
			}
		}
	}
}
