package probe_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/hopscope/hopscope/probe"
	"github.com/hopscope/hopscope/target"
)

// Watch a server pod with a sidecar for ten seconds and print each hop's
// median. Needs root; not run as a test.
func Example() {
	ctx := context.Background()
	p, err := probe.Start(ctx, probe.Config{}) // auto: TCX, else clsact
	if err != nil {
		log.Fatal(err) // e.g. probe.ErrPrivileges
	}
	defer p.Close()
	err = p.Attach(target.Target{
		Name: "server", Role: target.Server,
		NetnsPath: "/var/run/netns/server", Device: "eth0", Loopback: "lo",
		InboundPort: 15006, AppPort: 8080,
	})
	if err != nil {
		log.Fatal(err)
	}
	p.Reset()
	time.Sleep(10 * time.Second)
	r := p.Result()
	for _, hop := range probe.HopNames {
		if s, ok := r.Hops[hop]; ok {
			fmt.Printf("%s: p50 %d ns over %d requests\n", hop, s.P50, s.Count)
		}
	}
	fmt.Printf("mode %s, %d events, %d dropped\n", r.Probe.Mode, r.Probe.Events, r.Probe.Drops)
}
