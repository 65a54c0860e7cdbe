package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hopscope/hopscope/harness/bench"
	kubebench "github.com/hopscope/hopscope/harness/kube"
	"github.com/hopscope/hopscope/harness/report"
)

func init() {
	var (
		preset, rates, probeMode, out, name string
		proxies                             []string
		duration, warmup                    time.Duration
		runs, drop                          int
		kube                                bool
		kopts                               kubebench.Options
	)
	cmd := &cobra.Command{
		Use:   "bench --out DIR [flags]",
		Short: "Run an experiment: baseline and each proxy x rates x runs, on a freshly built lab each run",
		Long: `Run an experiment on this machine's lab: a baseline (client and server pods,
no proxy) and a mesh per proxy (the same with a sidecar in each pod), at each
rate, several runs each, interleaved, the lab rebuilt between runs. Writes
DIR/experiment.json, summary.md, report.html and runs/<scenario>-<rps>-<n>/,
then prints summary.md. Ctrl-C stops, writes what was measured, cleans up.

Presets: linkerd-2021 reproduces the published method (20, 200, 2000 RPS,
10-minute runs, 8 runs, the 3 with the highest baseline max dropped); demo
runs baseline, the reference proxy and every installed proxy once per rate
(13 s of load each; under 4 minutes in all). Flags given override the
preset. Without --proxy: the reference proxy and every installed real proxy.`,
		Example: `  sudo hopscope bench --preset demo --out results/demo
  sudo hopscope bench --preset linkerd-2021 --proxy reference --proxy haproxy --out results/l2021
  sudo hopscope bench --proxy nginx --proxy 'socat=socat TCP-LISTEN:{{.ListenPort}},bind={{.ListenHost}},fork,reuseaddr TCP:{{.Upstream}}' --rates 200 --duration 30s --runs 3 --out results/x`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("bench: --out DIR is required (where the results go)")
			}
			if kube && len(proxies) > 0 {
				return usagef("bench --kube: the sidecar is the mesh's: use --mesh, not --proxy")
			}
			cfg := bench.Custom()
			if preset != "" {
				p, err := bench.Preset(preset)
				if err != nil {
					return usagef("bench: %v", err)
				}
				cfg = p
			}
			f := c.Flags()
			if f.Changed("rates") {
				r, err := bench.ParseRates(rates)
				if err != nil {
					return usagef("bench: --rates: %v", err)
				}
				cfg.RatesRPS = r
			}
			if f.Changed("duration") {
				cfg.Duration = bench.Duration(duration)
			}
			if f.Changed("warmup") {
				cfg.Warmup = bench.Duration(warmup)
			}
			if f.Changed("runs") {
				cfg.Runs = runs
				if !f.Changed("drop") && cfg.DropHighestBaselineMax >= runs {
					cfg.DropHighestBaselineMax = 0
				}
			}
			if f.Changed("drop") {
				cfg.DropHighestBaselineMax = drop
			}
			if f.Changed("probe") {
				cfg.Probe = probeMode
			}
			cfg.Name = name

			var backend bench.Backend
			var observers []bench.Observer
			if kube {
				kb, obs, err := kubebench.Setup(c.Context(), kopts)
				if err != nil {
					return fmt.Errorf("bench --kube: %w", err)
				}
				backend, observers = kb, []bench.Observer{obs}
				cfg = cfg.WithProxies(kb.Scenarios()...)
			} else {
				lb, scen, err := labBackend(proxies)
				if err != nil {
					return err
				}
				backend = lb
				observers = []bench.Observer{&bench.ProbeObserver{Mode: cfg.Probe, Join: cfg.JoinRecords()}, &bench.SamplerObserver{}}
				cfg = cfg.WithProxies(scen...)
			}
			if err := cfg.Validate(); err != nil {
				return usagef("bench: %v", err)
			}
			n := len(cfg.Plan())
			fmt.Fprintf(os.Stderr, "bench: %d scenarios (%s) x %d rates x %d runs = %d runs, %v under load\n",
				len(cfg.Scenarios), scenarioNames(cfg.Scenarios), len(cfg.RatesRPS), cfg.Runs, n, cfg.LoadTime())

			r := &bench.Runner{
				Backend:   backend,
				Observers: observers,
				Version:   version,
				Render:    report.Write,
				Log:       os.Stderr,
			}
			e, err := r.Run(c.Context(), cfg, out)
			if e != nil {
				if b, rerr := os.ReadFile(filepath.Join(out, bench.SummaryFile)); rerr == nil {
					os.Stdout.Write(b)
				}
				fmt.Fprintf(os.Stderr, "bench: results in %s (%s, %v)\n", out, e.Status, time.Duration(e.WallTimeNs).Round(time.Second))
			}
			if err != nil {
				if errors.Is(err, bench.ErrInterrupted) {
					return fmt.Errorf("bench: %w; what was measured is in %s", err, out)
				}
				if e == nil {
					return usagef("bench: %v", err)
				}
				return fmt.Errorf("bench: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&preset, "preset", "", "start from a preset: "+strings.Join(bench.PresetNames(), ", "))
	f.StringArrayVar(&proxies, "proxy", nil, "a proxy scenario: NAME (reference, haproxy, nginx, caddy) or NAME='COMMAND with {{.Listen}} {{.Upstream}} {{.ConfigDir}}'; repeat for several")
	f.StringVar(&rates, "rates", "20,200,2000", "request rates (RPS), comma-separated")
	f.DurationVar(&duration, "duration", time.Minute, "measured window of each run")
	f.DurationVar(&warmup, "warmup", 5*time.Second, "load before each measured window, not counted")
	f.IntVar(&runs, "runs", 3, "runs per scenario and rate")
	f.IntVar(&drop, "drop", 0, "at each rate, drop the run indices with the highest baseline max latency (the published rule: 3 of 8)")
	f.StringVar(&probeMode, "probe", bench.ProbeAuto, "per-hop latency with the eBPF probe: auto (if it can attach), on (required), off")
	f.StringVar(&out, "out", "", "results directory (required)")
	f.StringVar(&name, "name", "", "experiment name (default: the base name of --out)")
	f.BoolVar(&kube, "kube", false, "run on a Kubernetes cluster through the node agents (deploy/) instead of the lab")
	kopts.AddFlags(f)
	root.AddCommand(cmd)
}

func scenarioNames(ss []bench.Scenario) string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Name)
	}
	return strings.Join(out, ", ")
}

// labBackend is the single-machine backend: it checks the prerequisites
// (printed for the user), root, and the --proxy scenarios (default: the
// reference proxy and every installed real proxy).
func labBackend(proxies []string) (*bench.LabBackend, []bench.Scenario, error) {
	backend, err := bench.NewLabBackend()
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprint(os.Stderr, backend.Prerequisites())
	if os.Geteuid() != 0 {
		return nil, nil, errors.New("bench: needs root (network namespaces, cgroups, BPF): run as root or with sudo")
	}
	if len(proxies) == 0 {
		return backend, backend.DefaultScenarios(), nil
	}
	var scen []bench.Scenario
	for _, p := range proxies {
		s, err := bench.ParseProxy(p)
		if err == nil {
			err = backend.Validate(s)
		}
		if err != nil {
			return nil, nil, usagef("bench: --proxy: %v", err)
		}
		scen = append(scen, s)
	}
	return backend, scen, nil
}
