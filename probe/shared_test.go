package probe

import (
	"context"
	"testing"
	"time"

	"github.com/hopscope/hopscope/target"
)

// TestSharedAttachment: two targets on one interface share its two
// attachments (counted); detaching one keeps the other's; cancelling the
// context given to Start detaches everything.
func TestSharedAttachment(t *testing.T) {
	needRoot(t)
	for _, m := range modes(t) {
		t.Run(string(m), func(t *testing.T) {
			c, s := newPair(t, "sc", "ss")
			serveHTTP(t, s.ns, "198.18.250.2:18080", 0)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p, err := Start(ctx, Config{Mode: m, Logf: t.Logf})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			must(t, p.Attach(target.Target{Name: "a", Role: target.Server, NetnsPath: s.ns, Device: s.dev, AppPort: 18080}))
			must(t, p.Attach(target.Target{Name: "b", Role: target.Server, NetnsPath: s.ns, Device: s.dev, AppPort: 18080}))
			if n := p.Result().Probe.Points; n != 2 {
				t.Fatalf("%d points for one device, want 2 (ingress, egress)", n)
			}
			must(t, p.Detach("a"))
			p.Reset()
			drive(t, c.ns, "http://198.18.250.2:18080", 10, time.Millisecond)
			r := p.Result()
			if r.Probe.Points != 2 || r.Hops[HopApp].Count != 10 {
				t.Errorf("after detaching a: %d points, %d app hops; want 2 and 10", r.Probe.Points, r.Hops[HopApp].Count)
			}
			ring := ringID(t, p)
			cancel()
			<-p.done
			if l := waitLeftovers(t, ring, map[string][]string{s.ns: {s.dev}}); len(l) > 0 {
				t.Errorf("after cancelling Start's context: %v", l)
			}
		})
	}
}
