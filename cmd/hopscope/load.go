package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hopscope/hopscope/harness/load"
)

func init() {
	var cfg load.Config
	var rate, jsonOut, hlogOut, recOut string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "load [flags] URL",
		Short: "Drive an HTTP/1.1 or gRPC target at a constant (open-loop) rate and measure corrected latency",
		Long: `Drive an HTTP/1.1 (http://host:port/path) or gRPC (grpc://host:port, the app's
echo service) target. Request i is due at t0 + i/rate; latency counts from the
due time, service time from the actual send. --rate max runs a closed loop.
Ctrl-C stops early and still prints and writes what was measured.`,
		Example: `  hopscope load --rate 2000 --duration 30s --connections 10 http://127.0.0.1:8080/
  hopscope load --rate 200 --duration 1m --json r.json --hlog r.hlog --records r.csv grpc://127.0.0.1:9090`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("load: give exactly one URL (http://HOST:PORT/PATH or grpc://HOST:PORT)")
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			cfg.URL = args[0]
			if rate == "" {
				return usagef("load: give --rate N (requests per second) or --rate max")
			}
			if strings.EqualFold(rate, "max") {
				cfg.ClosedLoop = true
			} else {
				r, err := strconv.ParseFloat(rate, 64)
				if err != nil || !(r > 0) {
					return usagef("load: --rate %q: want a positive number of requests per second, or max", rate)
				}
				cfg.Rate = r
			}
			if _, err := cfg.Check(); err != nil {
				return usagef("load: %v", strings.TrimPrefix(err.Error(), load.ErrConfig.Error()+": "))
			}
			if cfg.Procs < 0 {
				return usagef("load: --procs %d: want 0 (auto) or a positive number", cfg.Procs)
			}
			switch {
			case cfg.Procs > 0:
				runtime.GOMAXPROCS(cfg.Procs)
			case os.Getenv("GOMAXPROCS") == "":
				runtime.GOMAXPROCS(load.AutoProcs(cfg, runtime.GOMAXPROCS(0)))
			}
			var closers []*os.File
			defer func() {
				for _, f := range closers {
					f.Close()
				}
			}()
			create := func(path string) (*os.File, error) {
				f, err := os.Create(path)
				if err != nil {
					return nil, fmt.Errorf("load: %w", err)
				}
				closers = append(closers, f)
				return f, nil
			}
			if hlogOut != "" {
				f, err := create(hlogOut)
				if err != nil {
					return err
				}
				cfg.Hlog = f
			}
			if recOut != "" {
				f, err := create(recOut)
				if err != nil {
					return err
				}
				cfg.Records = f
			}
			res, err := load.Run(c.Context(), cfg)
			if res == nil {
				if errors.Is(err, load.ErrConfig) {
					return usagef("load: %v", err)
				}
				return fmt.Errorf("load: %w", err)
			}
			if !quiet {
				res.WriteText(os.Stdout)
			}
			if jsonOut != "" {
				b, jerr := json.MarshalIndent(res, "", "  ")
				if jerr == nil {
					jerr = os.WriteFile(jsonOut, append(b, '\n'), 0o644)
				}
				if jerr != nil && err == nil {
					err = jerr
				}
			}
			for _, f := range closers {
				if cerr := f.Close(); cerr != nil && err == nil {
					err = cerr
				}
			}
			closers = nil
			if err != nil {
				return fmt.Errorf("load: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&rate, "rate", "", "requests per second (open loop), or max for a closed loop (required)")
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured duration")
	f.DurationVar(&cfg.Warmup, "warmup", 0, "warm-up at the same rate before the measured duration (not counted)")
	f.IntVarP(&cfg.Connections, "connections", "c", 10, "connections opened before the run")
	f.IntVar(&cfg.MaxConnections, "max-connections", 0, "let the pool grow up to this when all connections are busy (default: --connections; beyond it requests wait and count as delayed)")
	f.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "per-request (and connect) timeout")
	f.IntVar(&cfg.Payload, "payload", 0, "gRPC request payload bytes")
	f.DurationVar(&cfg.Spin, "spin", 0, "stop sleeping this long before each due time and yield in a loop (less send lag, more CPU)")
	f.IntVar(&cfg.Procs, "procs", 0, "Go Ps (GOMAXPROCS) for the run; 0: one per 10,000 req/s of open loop, all CPUs for --rate max (the GOMAXPROCS variable overrides)")
	f.StringVar(&jsonOut, "json", "", "write the result as JSON to this file")
	f.StringVar(&hlogOut, "hlog", "", "write per-second latency histograms (HdrHistogram log) to this file")
	f.StringVar(&recOut, "records", "", "write one CSV record per request (id, due, sent, first byte, done) to this file")
	f.BoolVarP(&quiet, "quiet", "q", false, "do not print the table")
	root.AddCommand(cmd)
}
