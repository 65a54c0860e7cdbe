package sampler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/hopscope/hopscope/sampler"
	"github.com/hopscope/hopscope/spawn"
)

// A bench run: put a proxy in its own cgroup, sample it for the run, keep the
// figures (run.json) and the series (resources.csv).
func Example() {
	dirs, err := sampler.MakeCgroup("/hopscope/lab1/server-proxy")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sampler.RemoveCgroup("/hopscope/lab1")
	cmd, _ := spawn.Command(context.Background(), spawn.Options{Cgroups: dirs}, "haproxy", "-f", "haproxy.cfg")
	if err := cmd.Start(); err != nil {
		fmt.Println(err)
		return
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	s := sampler.New(sampler.Config{Interval: 100 * time.Millisecond})
	if err := s.Add(sampler.Source{Name: "server-proxy", Cgroup: "/hopscope/lab1/server-proxy"}); err != nil {
		fmt.Println(err) // names the path and what is missing
		return
	}
	s.Start(context.Background())
	time.Sleep(10 * time.Second) // the run
	res := s.Stop()

	r, _ := res.Get("server-proxy")
	if r.MemoryPeakBytes != nil {
		fmt.Printf("peak %d bytes (%s, %s)\n", *r.MemoryPeakBytes, r.PeakSource, r.PeakScope)
	}
	json.NewEncoder(os.Stdout).Encode(res)
	f, _ := os.Create("resources.csv")
	defer f.Close()
	res.WriteCSV(f)
}

// A long-running agent: pods come and go; Snapshot gives current figures
// for metrics without stopping.
func ExampleSampler_Snapshot() {
	s := sampler.New(sampler.Config{NoSeries: true})
	s.Start(context.Background())
	defer s.Stop()
	s.Add(sampler.Source{Name: "default/emoji-7d9f/linkerd-proxy", Cgroup: "/kubepods/burstable/pod1234/abcd"})
	for _, r := range s.Snapshot().Sources {
		if r.MemoryCurrentBytes != nil {
			fmt.Println(r.Name, *r.MemoryCurrentBytes)
		}
	}
	s.Remove("default/emoji-7d9f/linkerd-proxy")
}
