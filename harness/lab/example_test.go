package lab_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"

	"github.com/hopscope/hopscope/harness/lab"
)

// A mesh lab with nginx sidecars; the load generator runs in the client pod.
func ExampleUp() {
	ctx := context.Background()
	l, err := lab.Up(ctx, lab.Spec{
		Name:     "example",
		Topology: lab.Mesh,
		Proxy:    lab.ProxySpec{Name: "nginx"},
		Hopscope: "/usr/local/bin/hopscope",
	})
	if err != nil {
		log.Fatal(err) // names the cause and the fix: not root, nginx not installed, ...
	}
	defer l.Down()
	out, err := l.RunInClient(ctx, []string{"/usr/local/bin/hopscope", "load", "-q", "--rate", "200", "--duration", "10s", "--json", "/dev/stdout", l.URL()})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", out)
	for _, t := range l.Targets() { // for the probe and the sampler
		fmt.Println(t.Role, t.NetnsPath, t.Device, t.ProxyCgroup)
	}
}

// A pod of one's own: a namespace with eth0 on the lab bridge.
func ExampleNewPod() {
	ctx := context.Background()
	p, err := lab.NewPod(ctx, "mypod", netip.MustParsePrefix("198.18.0.2/24"))
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	pr, err := p.Start(ctx, "server", []string{"hopscope", "app", "--listen", "198.18.0.2:8080"}, lab.ProcOptions{ReadyAddr: "198.18.0.2:8080"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(pr.PID, pr.Cgroup)
}
