package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/hopscope/hopscope/agent"
	"github.com/hopscope/hopscope/probe"
	"github.com/hopscope/hopscope/sampler"
	"github.com/hopscope/hopscope/target"
)

func init() {
	var (
		opts              target.KubeOptions
		listen, tokenFile string
		mode              string
		interval, resync  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "agent [--node NODE] [-n NS] [-l SELECTOR] [--kubeconfig F] [--listen ADDR --token-file F]",
		Short: "Run the node agent: attach the probe and sampler to this node's meshed pods, serve metrics and run windows",
		Long: `The agent watches the pods of its node (--node, default $NODE_NAME from the
downward API) through the Kubernetes API (in-cluster config unless --kubeconfig),
finds each sidecar proxy (linkerd-proxy, istio-proxy, --sidecar NAME) and its
pod's network namespace, device and cgroups through /proc, attaches the probe
and the sampler, and serves on --listen:

  /metrics                         Prometheus: hop latency by namespace, pod, hop; proxy CPU and memory; probe events and drops
  /healthz                         what is wrong (kubeconfig, API server, RBAC, pods without a process), 503 if anything
  POST /api/v1/windows/NAME/start  mark a run window; .../stop ends it
  GET  /api/v1/windows/NAME        that window's hop histograms (HdrHistogram, base64) and resources

It listens on 127.0.0.1 unless told otherwise; any other address needs
--token-file (a bearer token, e.g. mounted from a Secret). It needs root
(hostPID, CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE):
see deploy/.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			if err := opts.Check(); err != nil {
				return usagef("%v", err)
			}
			pmode, err := probe.ParseMode(mode)
			if err != nil {
				return usagef("--probe-mode: %v", err)
			}
			if interval <= 0 || resync <= 0 {
				return usagef("--sample-interval and --resync must be positive (e.g. 1s)")
			}
			cfg := agent.Config{Addr: listen, Logf: func(format string, args ...any) {
				fmt.Fprintf(os.Stderr, "hopscope agent: "+format+"\n", args...)
			}}
			if tokenFile != "" {
				if cfg.Token, err = agent.ReadToken(tokenFile); err != nil {
					return usagef("%v", err)
				}
			}
			if _, err := agent.New(cfg, nil, nil); err != nil { // the listen policy, before starting anything
				return usagef("%v", err)
			}

			p, perr := probe.Start(ctx, probe.Config{Mode: pmode, Logf: cfg.Logf})
			s := sampler.New(sampler.Config{Interval: interval, NoSeries: true})
			s.Start(ctx)
			a, err := agent.New(cfg, p, s)
			if err != nil {
				return err
			}
			if perr != nil {
				a.Problem("probe", perr)
			} else {
				defer p.Close()
			}
			client, err := opts.Client()
			if err != nil {
				a.Problem("kubeconfig", err) // keep serving: /healthz says what to fix
			} else {
				w, err := target.NewWatcher(client, opts, target.NewResolver(opts))
				if err != nil {
					return usagef("%v", err)
				}
				w.Resync = resync
				wctx, stop := context.WithCancel(ctx)
				done := make(chan struct{})
				go func() { a.Watch(wctx, w); close(done) }()
				defer func() { stop(); <-done }() // detached before the probe closes
			}
			return a.Serve(ctx)
		},
	}
	f := cmd.Flags()
	opts.AddFlags(f)
	f.StringVar(&listen, "listen", agent.DefaultAddr, "address to serve on; beyond 127.0.0.1, ::1 and localhost it needs --token-file")
	f.StringVar(&tokenFile, "token-file", "", "file holding the bearer token every request must carry (mount it from a Secret)")
	f.StringVar(&mode, "probe-mode", "auto", "attach mode: auto, tcx (Linux >= 6.6) or clsact")
	f.DurationVar(&interval, "sample-interval", time.Second, "how often the sampler reads each proxy's cgroup")
	f.DurationVar(&resync, "resync", 10*time.Second, "how often every pod is resolved again (pods whose containers had no process yet)")
	root.AddCommand(cmd)
}
