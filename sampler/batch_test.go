package sampler

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCommonDir(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{[]string{"/sys/fs/cgroup/a/b"}, "/sys/fs/cgroup/a/b"},
		{[]string{"/sys/fs/cgroup/a/b", "/sys/fs/cgroup/a/c"}, "/sys/fs/cgroup/a"},
		{[]string{"/sys/fs/cgroup/a/b", "/sys/fs/cgroup/a/b/c"}, "/sys/fs/cgroup/a/b"},
		{[]string{"/sys/fs/cgroup/ab", "/sys/fs/cgroup/a"}, "/sys/fs/cgroup"},
		{[]string{"/sys/fs/cgroup/a/", "/sys/fs/cgroup/a"}, "/sys/fs/cgroup/a"},
		{[]string{"/x", "/y"}, "/"},
		{nil, ""},
	} {
		if got := commonDir(tc.in); got != tc.want {
			t.Errorf("commonDir(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// usageUsec reads usage_usec from a v2 cpu.stat.
func usageUsec(t *testing.T, dir string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		t.Fatal(err)
	}
	v, ok := field(b, "usage_usec")
	if !ok {
		t.Fatalf("%s/cpu.stat has no usage_usec", dir)
	}
	return v
}

// TestBatchMatchesFiles: the BPF cgroup iterator gives the same CPU usage
// and current memory as the cgroup's own files, read just before and after
// it, for a cgroup that burned CPU and holds memory. On this hybrid host
// that is CPU from the v2 hierarchy and memory from v1; in the VM both are
// v2.
func TestBatchMatchesFiles(t *testing.T) {
	needRoot(t)
	b, err := newBatch()
	if err != nil {
		if kernelAtLeast(6, 1) {
			t.Fatalf("kernel >= 6.1 has cgroup iterators, but: %v", err)
		}
		t.Skipf("no BPF cgroup iterator here: %v", err)
	}
	defer b.close()
	rel, dirs := testCgroup(t, "batch")
	_, in, out := startChild(t, dirs, "serve")
	expect(t, out, "ready")
	burnIn(t, in, out, 200)

	s := New(Config{Reader: ReaderFiles})
	if err := s.Add(Source{Name: "b", Cgroup: rel}); err != nil {
		t.Fatal(err)
	}
	tr := s.trackers["b"]
	defer tr.close()
	if tr.cpuKey.id == 0 || tr.memKey.id == 0 {
		t.Fatalf("keys cpu %+v mem %+v: want both (cpu %s, memory %s)", tr.cpuKey, tr.memKey, tr.cpuFrom, tr.memFrom)
	}
	memDir := tr.loc.memory
	if tr.memFrom == "v2" {
		memDir = tr.loc.v2
	}
	// Walk from the parent, as with several sources: the iterator must
	// pick this cgroup out of its siblings by ID.
	plan := map[string][]string{}
	plan[tr.cpuKey.mount] = append(plan[tr.cpuKey.mount], filepath.Dir(tr.loc.v2))
	plan[tr.memKey.mount] = append(plan[tr.memKey.mount], filepath.Dir(memDir))
	if err := b.plan(plan); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		cpu0, mem0 := usageUsec(t, tr.loc.v2), memNow(t, dirs)
		if err := b.read(); err != nil {
			t.Fatal(err)
		}
		cpu1, mem1 := usageUsec(t, tr.loc.v2), memNow(t, dirs)
		c, ok := b.vals[tr.cpuKey]
		m, ok2 := b.vals[tr.memKey]
		if !ok || !ok2 {
			t.Fatalf("batch of %d cgroups lacks this one (cpu %v, memory %v)", len(b.vals), ok, ok2)
		}
		t.Logf("cpu.stat usage_usec %d..%d, batch %d (flushed %v); memory %d..%d, batch %d",
			cpu0, cpu1, c.cpuNs/1000, c.flushed, mem0, mem1, m.memBytes)
		if !c.flushed {
			t.Errorf("the walk's rstat was not flushed (no css_rstat_flush or cgroup_rstat_flush kfunc)")
		}
		if got := c.cpuNs / 1000; got < cpu0 || got > cpu1 {
			t.Errorf("batch CPU %d µs, files %d and %d µs around it", got, cpu0, cpu1)
		}
		if cpu0 < 150_000 {
			t.Errorf("cpu.stat usage_usec %d after a 200 ms burn", cpu0)
		}
		if lo, hi := min(mem0, mem1), max(mem0, mem1); m.memBytes < lo || m.memBytes > hi {
			t.Errorf("batch memory %d bytes, files %d and %d around it", m.memBytes, mem0, mem1)
		}
		burnIn(t, in, out, 20)
	}

	// The sampler says which reader it used.
	s2 := New(Config{})
	if err := s2.Add(Source{Name: "b", Cgroup: rel}); err != nil {
		t.Fatal(err)
	}
	s2.Start(context.Background())
	time.Sleep(250 * time.Millisecond)
	res := s2.Stop()
	if res.Reader != ReaderBPF || res.ReaderNote != "" {
		t.Errorf("reader %q (%s), want %s", res.Reader, res.ReaderNote, ReaderBPF)
	}
	if r, _ := res.Get("b"); r.Samples < 2 || len(r.Errors) != 0 {
		t.Errorf("%d samples, errors %v", r.Samples, r.Errors)
	}
	s3 := New(Config{Reader: ReaderFiles})
	s3.Start(context.Background())
	if res := s3.Stop(); res.Reader != ReaderFiles || !strings.Contains(res.ReaderNote, "asked") {
		t.Errorf("Reader: files gave reader %q (%s)", res.Reader, res.ReaderNote)
	}
}

// TestBatchSeesRemoval: a cgroup removed while the batch walks its parent
// drops out of the batch; the tracker then reads its file, fails, and marks
// the error (as TestCgroupRemovedMidRun does with files).
func TestBatchSeesRemoval(t *testing.T) {
	needRoot(t)
	if _, err := newBatch(); err != nil {
		t.Skipf("no BPF cgroup iterator here: %v", err)
	}
	relA, _ := testCgroup(t, "batch-a")
	relB, _ := testCgroup(t, "batch-b")
	s := New(Config{})
	for _, r := range []string{relA, relB} {
		if err := s.Add(Source{Name: r, Cgroup: r}); err != nil {
			t.Fatal(err)
		}
	}
	s.Start(context.Background())
	time.Sleep(250 * time.Millisecond)
	if err := RemoveCgroup(relB); err != nil {
		t.Fatal(err)
	}
	time.Sleep(250 * time.Millisecond)
	res := s.Stop()
	a, _ := res.Get(relA)
	b, _ := res.Get(relB)
	logJSON(t, b)
	if res.Reader != ReaderBPF {
		t.Errorf("reader %q (%s)", res.Reader, res.ReaderNote)
	}
	if len(a.Errors) != 0 || a.Samples < 4 {
		t.Errorf("%s: %d samples, errors %v", relA, a.Samples, a.Errors)
	}
	if len(b.Errors) == 0 || !strings.Contains(b.Errors[0], "removed") {
		t.Errorf("%s: errors %v, want it marked removed", relB, b.Errors)
	}
}
