package bench

import (
	"strings"
	"testing"
	"time"
)

func TestPlanInterleaves(t *testing.T) {
	cfg := Custom().WithProxies(Scenario{Name: "ref", Proxy: "ref"}, Scenario{Name: "haproxy", Proxy: "haproxy"})
	cfg.RatesRPS = []int{20, 200}
	cfg.Runs = 3
	plan := cfg.Plan()
	if len(plan) != 3*2*3 {
		t.Fatalf("%d runs, want 18", len(plan))
	}
	seen := map[string]bool{}
	lastN := 0
	for i, r := range plan {
		if seen[r.ID()] {
			t.Fatalf("run %s planned twice", r.ID())
		}
		seen[r.ID()] = true
		if r.N < lastN {
			t.Fatalf("run %d (%s) comes after a run %d: every run 1 must come before any run 2", i, r.ID(), lastN)
		}
		lastN = r.N
	}
	// Each round of 3 scenarios at a rate starts with a different scenario.
	firsts := map[string]bool{}
	for i := 0; i < len(plan); i += 3 {
		if plan[i].RateRPS == 20 {
			firsts[plan[i].Scenario.Name] = true
		}
	}
	if len(firsts) != 3 {
		t.Errorf("rounds at 20 RPS start with %v: want every scenario first once", firsts)
	}
	if got := plan[0].ID(); got != "baseline-20-1" {
		t.Errorf("first run %s, want baseline-20-1", got)
	}
}

func TestPresets(t *testing.T) {
	c, err := Preset("linkerd-2021")
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(c.Duration) != 10*time.Minute || c.Runs != 8 || c.DropHighestBaselineMax != 3 ||
		len(c.RatesRPS) != 3 || c.RatesRPS[0] != 20 || c.RatesRPS[1] != 200 || c.RatesRPS[2] != 2000 {
		t.Errorf("linkerd-2021 = %+v, not the published method", c)
	}
	d, err := Preset("demo")
	if err != nil {
		t.Fatal(err)
	}
	d = d.WithProxies(Scenario{Name: "ref", Proxy: "ref"}, Scenario{Name: "haproxy", Proxy: "haproxy"},
		Scenario{Name: "nginx", Proxy: "nginx"}, Scenario{Name: "caddy", Proxy: "caddy"})
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	// 5 scenarios x 3 rates x 1 run of 13 s: 195 s under load, leaving 45 s
	// of the 4 minutes for 15 lab rebuilds (about 1 s each) and the build.
	if got := d.LoadTime(); got > 195*time.Second {
		t.Errorf("demo spends %v under load: no time left to rebuild the lab within 4 minutes", got)
	}
	if _, err := Preset("nope"); err == nil || !strings.Contains(err.Error(), "demo") {
		t.Errorf("unknown preset: %v, want the list of presets", err)
	}
}

func TestConfigValidate(t *testing.T) {
	good := Custom().WithProxies(Scenario{Name: "ref", Proxy: "ref"})
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"ok", func(*Config) {}, ""},
		{"no rates", func(c *Config) { c.RatesRPS = nil }, "no rates"},
		{"zero rate", func(c *Config) { c.RatesRPS = []int{0} }, "positive"},
		{"zero runs", func(c *Config) { c.Runs = 0 }, "at least 1"},
		{"drop all", func(c *Config) { c.DropHighestBaselineMax = 3 }, "fewer than --runs"},
		{"dup", func(c *Config) { c.Scenarios = append(c.Scenarios, c.Scenarios[1]) }, "twice"},
		{"probe", func(c *Config) { c.Probe = "maybe" }, "auto, on or off"},
		{"duration", func(c *Config) { c.Duration = 0 }, "positive duration"},
	}
	for _, tc := range cases {
		c := good
		c.Scenarios = append([]Scenario(nil), good.Scenarios...)
		tc.edit(&c)
		err := c.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	if r, err := ParseRates("20, 200,2000"); err != nil || len(r) != 3 || r[2] != 2000 {
		t.Errorf("ParseRates = %v, %v", r, err)
	}
	for _, bad := range []string{"", "x", "20,-1", "1.5"} {
		if _, err := ParseRates(bad); err == nil {
			t.Errorf("ParseRates(%q) accepted", bad)
		}
	}
	s, err := ParseProxy("envoy=envoy -c {{.ConfigDir}}/e.yaml")
	if err != nil || s.Name != "envoy" || s.Template != "envoy -c {{.ConfigDir}}/e.yaml" || s.IsBaseline() {
		t.Errorf("ParseProxy template = %+v, %v", s, err)
	}
	if s, err := ParseProxy("haproxy"); err != nil || s.Proxy != "haproxy" {
		t.Errorf("ParseProxy name = %+v, %v", s, err)
	}
	for _, bad := range []string{"", "Bad Name", "baseline", "x="} {
		if _, err := ParseProxy(bad); err == nil {
			t.Errorf("ParseProxy(%q) accepted", bad)
		}
	}
}

func TestShortVersion(t *testing.T) {
	for banner, want := range map[string]string{
		"nginx version: nginx/1.22.1":                                        "1.22.1",
		"HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/": "2.6.12-1+deb12u4",
		"v2.6.2 h1:abc": "v2.6.2",
		"built in":      "built in",
	} {
		if got := shortVersion(banner); got != want {
			t.Errorf("shortVersion(%q) = %q, want %q", banner, got, want)
		}
	}
}
