package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hopscope/hopscope/hist"
	"github.com/hopscope/hopscope/probe"
	"github.com/hopscope/hopscope/target"
)

func init() {
	var (
		nsName, dev, lo, role, mode, ports, jsonOut, hlogOut string
		inbound, outbound, app                               uint16
		capture                                              int
		duration                                             time.Duration
	)
	cmd := &cobra.Command{
		Use:   "probe --dev IF [--netns NAME|PATH] --ports P[,P...] --duration D --json FILE",
		Short: "Attach the eBPF probe to one pod's interfaces and report per-hop latency",
		Long: `Probe attaches hopscope's TC classifier to --dev (ingress and egress) and,
with --lo, to the namespace's loopback, inside --netns (a name under
/var/run/netns or a path such as /proc/PID/ns/net; default: this namespace).
It follows requests that carry a hopscope ID (hsid=...) on the watched ports
for --duration (0: until interrupted), then writes the hop histograms'
summaries and the probe's health as JSON ({"mode", "hops", "probe"}) and,
with --hlog, the histograms as an HdrHistogram log. --ports are server
ports (a segment toward one is a request); --inbound-port/--app-port
describe a server sidecar, --outbound-port a client one.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			m, err := probe.ParseMode(mode)
			if err != nil {
				return usagef("--mode: %v", err)
			}
			if dev == "" && lo == "" {
				return usagef("give --dev IF (and/or --lo lo) to attach to")
			}
			if jsonOut == "" {
				return usagef("--json FILE is required ('-' for stdout)")
			}
			if duration < 0 {
				return usagef("--duration must not be negative (0: until interrupted)")
			}
			ps, err := target.ParsePorts(ports)
			if err != nil {
				return usagef("--ports: %v", err)
			}
			if len(ps) == 0 && inbound == 0 && outbound == 0 && app == 0 {
				return usagef("give --ports (or --inbound-port/--outbound-port/--app-port): the probe watches only those")
			}
			r := target.Role(role)
			if r != target.Client && r != target.Server {
				return usagef("--role %q: want client or server", role)
			}
			nsPath := nsName
			if nsPath != "" && !strings.Contains(nsPath, "/") {
				nsPath = "/var/run/netns/" + nsPath
			}
			if nsPath != "" {
				if _, err := os.Stat(nsPath); err != nil {
					return usagef("--netns %s: %v", nsName, err)
				}
			}
			p, err := probe.Start(c.Context(), probe.Config{Mode: m, CaptureBytes: capture, Ports: ps,
				Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "hopscope: "+f+"\n", a...) }})
			if err != nil {
				return err
			}
			defer p.Close()
			t := target.Target{Name: "probe", Role: r, NetnsPath: nsPath, Device: dev, Loopback: lo,
				InboundPort: inbound, OutboundPort: outbound, AppPort: app}
			if err := p.Attach(t); err != nil {
				return err
			}
			from := time.Now()
			if duration > 0 {
				select {
				case <-time.After(duration):
				case <-c.Context().Done():
				}
			} else {
				<-c.Context().Done()
			}
			res := p.Result()
			if err := p.Close(); err != nil {
				return fmt.Errorf("detach: %w", err)
			}
			if err := writeJSON(jsonOut, res); err != nil {
				return err
			}
			if hlogOut != "" {
				to := time.Now()
				if err := writeTo(hlogOut, func(f *os.File) error {
					lw, err := hist.NewLogWriter(f, from, "hopscope probe: hops, ns")
					if err != nil {
						return err
					}
					for name, h := range res.Hists {
						if err := lw.Interval(h, name, from, to); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					return err
				}
			}
			if res.Probe.Drops > 0 {
				fmt.Fprintf(os.Stderr, "hopscope: %d events dropped (ring buffer full): results are incomplete\n", res.Probe.Drops)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&nsName, "netns", "", "network namespace: a name under /var/run/netns or a path (default: this one)")
	f.StringVar(&dev, "dev", "", "pod-side interface to watch, ingress and egress (e.g. eth0)")
	f.StringVar(&lo, "lo", "", "loopback to watch too (\"lo\") when the pod has a sidecar")
	f.StringVar(&role, "role", "server", "the pod's role: server or client")
	f.StringVar(&ports, "ports", "", "server ports to watch, comma-separated")
	f.Uint16Var(&inbound, "inbound-port", 0, "server sidecar's listen port")
	f.Uint16Var(&outbound, "outbound-port", 0, "client sidecar's listen port on lo")
	f.Uint16Var(&app, "app-port", 0, "app's listen port")
	f.StringVar(&mode, "mode", "auto", "attach mode: auto, tcx or clsact")
	f.IntVar(&capture, "capture", 128, "payload bytes captured per segment (1-256)")
	f.DurationVar(&duration, "duration", 0, "how long to watch (0: until interrupted)")
	f.StringVar(&jsonOut, "json", "", "where to write the result (JSON; - for stdout)")
	f.StringVar(&hlogOut, "hlog", "", "where to write the hop histograms (HdrHistogram log), if wanted")

	var all bool
	cleanup := &cobra.Command{
		Use:   "cleanup [--all]",
		Short: "Remove clsact filters (and emptied clsact qdiscs) left by killed hopscope processes",
		Long: `Cleanup searches this namespace, every /var/run/netns entry and every
process's namespace for cls_bpf filters named hopscope-PID and removes those
whose process is gone (with --all: every one, also a running probe's), then
any clsact qdisc that removal left empty. Nothing else is touched. TCX
attachments need no cleanup: they vanish with their process.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if os.Geteuid() != 0 {
				return errors.New(probe.ErrPrivileges.Error())
			}
			n, err := probe.Cleanup(probe.CleanupOptions{Stale: !all})
			fmt.Printf("removed %d hopscope filter(s)\n", n)
			if err != nil {
				return fmt.Errorf("cleanup: %w", err)
			}
			return nil
		},
	}
	cleanup.Flags().BoolVar(&all, "all", false, "also remove filters of running hopscope processes")
	cmd.AddCommand(cleanup)
	root.AddCommand(cmd)
}
