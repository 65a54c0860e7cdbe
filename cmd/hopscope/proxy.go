package main

import (
	"fmt"
	"net"
	"os"

	"github.com/spf13/cobra"

	"github.com/hopscope/hopscope/harness/proxy"
)

func init() {
	var cfg proxy.Config
	var quiet bool
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run the reference sidecar proxy (HTTP/1.1 keep-alive or h2c; optional fixed delay and per-request stamps)",
		Example: `  hopscope proxy --listen 127.0.0.1:15001 --upstream 198.18.0.3:15006
  hopscope proxy --listen 0.0.0.0:15006 --upstream 127.0.0.1:8080 --delay 2ms --stamps proxy.csv
  hopscope proxy --h2c --listen 127.0.0.1:15001 --upstream 198.18.0.3:15006`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
				return usagef("proxy: --listen %q: want HOST:PORT", cfg.Listen)
			}
			if _, _, err := net.SplitHostPort(cfg.Upstream); err != nil {
				return usagef("proxy: --upstream %q: want HOST:PORT", cfg.Upstream)
			}
			if cfg.Delay < 0 {
				return usagef("proxy: --delay %v: want a duration >= 0", cfg.Delay)
			}
			cfg.OnListen = func(a net.Addr) {
				if !quiet {
					fmt.Fprintf(os.Stderr, "proxy: %s -> %s\n", a, cfg.Upstream)
				}
			}
			return proxy.Serve(c.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "", "listen address HOST:PORT")
	f.StringVar(&cfg.Upstream, "upstream", "", "upstream address HOST:PORT")
	f.DurationVar(&cfg.Delay, "delay", 0, "fixed delay added to every request before it goes upstream (e.g. 2ms)")
	f.StringVar(&cfg.Stamps, "stamps", "", "write per-request "+proxy.StampHeader+" (CLOCK_MONOTONIC) to this CSV file")
	f.BoolVar(&cfg.H2C, "h2c", false, "HTTP/2 cleartext (gRPC) instead of HTTP/1.1")
	f.BoolVarP(&quiet, "quiet", "q", false, "do not print the listen address")
	root.AddCommand(cmd)
}
