package sampler

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/hopscope/hopscope/spawn"
	"golang.org/x/sys/unix"
)

// benchCgroups makes n cgroups below /hopscope-test-sampler-bench, each
// holding one sleeping child (so they are populated), and removes them at
// the end.
func benchCgroups(b *testing.B, n int) []Source {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root to create cgroups")
	}
	const top = "/hopscope-test-sampler-bench"
	if err := RemoveCgroup(top); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := RemoveCgroup(top); err != nil {
			b.Error(err)
		}
	})
	var srcs []Source
	for i := 0; i < n; i++ {
		rel := fmt.Sprintf("%s/c%03d", top, i)
		dirs, err := MakeCgroup(rel)
		if err != nil {
			b.Fatal(err)
		}
		cmd, err := spawn.Command(context.Background(), spawn.Options{Cgroups: dirs}, "sleep", "3600")
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		srcs = append(srcs, Source{Name: rel, Cgroup: rel})
	}
	return srcs
}

// BenchmarkSampleTick: the CPU one 10 Hz tick over 100 populated cgroups
// costs (memory.stat every 10th tick, as by default). The reported
// core-%@10Hz is that cost times 10 per second, as a share of one core;
// the budget is 1%.
func BenchmarkSampleTick(b *testing.B) {
	srcs := benchCgroups(b, 100)
	s := New(Config{})
	for _, src := range srcs {
		if err := s.Add(src); err != nil {
			b.Fatal(err)
		}
	}
	now := time.Now().UnixNano()
	for _, t := range s.trackers {
		t.begin(now)
	}
	cpu0 := selfCPU()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := quick
		if i%s.statN == 0 {
			d = stat
			if i%(10*s.statN) == 0 {
				d = all
			}
		}
		for _, t := range s.trackers {
			t.sample(now+int64(i+1)*1e8, now, d)
		}
	}
	b.StopTimer()
	perTick := float64(selfCPU()-cpu0) / float64(b.N)
	b.ReportMetric(perTick, "cpu-ns/tick")
	b.ReportMetric(perTick*10/1e9*100, "core-%@10Hz")
	for _, t := range s.trackers {
		if t.dead {
			b.Fatalf("%s: %v", t.src.Name, t.errs)
		}
	}
	s.Stop()
}

// BenchmarkSampler100At10Hz runs the real sampler (timer and all) on 100
// cgroups at 10 Hz for 5 s per iteration and reports the process's CPU
// (rusage) as a share of one core, against the same process idle.
func BenchmarkSampler100At10Hz(b *testing.B) {
	srcs := benchCgroups(b, 100)
	b.ResetTimer()
	var busy, idle time.Duration
	for i := 0; i < b.N; i++ {
		c0 := selfCPU()
		time.Sleep(2 * time.Second)
		idle += selfCPU() - c0
		s := New(Config{})
		for _, src := range srcs {
			if err := s.Add(src); err != nil {
				b.Fatal(err)
			}
		}
		c0 = selfCPU()
		s.Start(context.Background())
		time.Sleep(5 * time.Second)
		r := s.Stop()
		busy += selfCPU() - c0
		if len(r.Sources) != 100 || r.Sources[0].Samples < 40 {
			b.Fatalf("%d sources, %d samples", len(r.Sources), r.Sources[0].Samples)
		}
	}
	b.StopTimer()
	b.ReportMetric(100*busy.Seconds()/(5*float64(b.N)), "core-%")
	b.ReportMetric(100*idle.Seconds()/(2*float64(b.N)), "idle-core-%")
}

func selfCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
