package main

import (
	"fmt"
	"net"
	"os"

	"github.com/spf13/cobra"

	"github.com/hopscope/hopscope/harness/app"
)

func init() {
	var cfg app.Config
	var quiet bool
	cmd := &cobra.Command{
		Use:     "app",
		Short:   "Serve the test application (HTTP/1.1 and gRPC h2c echo with a set service time)",
		Example: `  hopscope app --listen 127.0.0.1:8080 --grpc-listen 127.0.0.1:9090 --delay exp:1ms --size 512 --stamps app.csv`,
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if cfg.Listen == "" && cfg.GRPCListen == "" {
				return usagef("app: give --listen ADDR and/or --grpc-listen ADDR")
			}
			for _, a := range []string{cfg.Listen, cfg.GRPCListen} {
				if a == "" {
					continue
				}
				if _, _, err := net.SplitHostPort(a); err != nil {
					return usagef("app: listen address %q: want HOST:PORT", a)
				}
			}
			if cfg.Size < 0 {
				return usagef("app: --size %d: want 0 or more bytes", cfg.Size)
			}
			cfg.OnListen = func(h, g net.Addr) {
				if quiet {
					return
				}
				if h != nil {
					fmt.Fprintf(os.Stderr, "app: http on %s\n", h)
				}
				if g != nil {
					fmt.Fprintf(os.Stderr, "app: grpc on %s\n", g)
				}
			}
			return app.Serve(c.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "", "HTTP/1.1 listen address, e.g. 127.0.0.1:8080")
	f.StringVar(&cfg.GRPCListen, "grpc-listen", "", "gRPC (h2c) listen address, e.g. 127.0.0.1:9090")
	f.Var(&cfg.Delay, "delay", "service time: 0, a duration (1ms), exp:MEAN or uniform:LOW-HIGH")
	f.IntVar(&cfg.Size, "size", 0, "response body bytes (HTTP: at least the ID line; gRPC: payload bytes)")
	f.StringVar(&cfg.Stamps, "stamps", "", "write per-request id,recv_ns,send_ns (CLOCK_MONOTONIC) to this CSV file")
	f.BoolVarP(&quiet, "quiet", "q", false, "do not print the listen addresses")
	root.AddCommand(cmd)
}
