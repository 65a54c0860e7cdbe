package target

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkFindProcesses scans this machine's /proc for a container that is
// not there: the cost of one pod's resolution, which grows with the number
// of processes on the node (reported as ns/op and per process).
func BenchmarkFindProcesses(b *testing.B) {
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range ents {
		if _, err := fmt.Sscan(e.Name(), new(int)); err == nil {
			n++
		}
	}
	id := ContainerID{"containerd", idA}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := FindProcesses("/proc", id); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/process")
	b.ReportMetric(float64(n), "processes")
}

// BenchmarkFindProcessesFixture: the same over a fixture of 1000 processes,
// a busy node, so figures compare across machines.
func BenchmarkFindProcessesFixture(b *testing.B) {
	root := procFixture(b, 1000)
	id := ContainerID{"containerd", idA}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		FindProcesses(root, id)
	}
}

// BenchmarkScanContainers: one pass that serves every pod of the node.
func BenchmarkScanContainers(b *testing.B) {
	root := procFixture(b, 1000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if idx, _ := ScanContainers(root); len(idx) != 1000 {
			b.Fatalf("%d containers", len(idx))
		}
	}
}

// procFixture is a /proc of n processes, each in its own containerd container.
func procFixture(b *testing.B, n int) string {
	root := b.TempDir()
	for pid := 1; pid <= n; pid++ {
		d := filepath.Join(root, fmt.Sprint(pid))
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "cgroup"), []byte(fmt.Sprintf("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod%d.slice/cri-containerd-%064x.scope\n", pid, pid)), 0o644)
	}
	return root
}
