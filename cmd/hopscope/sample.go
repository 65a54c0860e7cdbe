package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/hopscope/hopscope/sampler"
	"github.com/spf13/cobra"
)

func init() {
	var (
		cgroups            []string
		jsonOut, csvOut    string
		pid                int
		duration, interval time.Duration
		reader             string
	)
	cmd := &cobra.Command{
		Use:   "sample --cgroup PATH [--cgroup PATH...] | --pid PID --duration D --json FILE [--csv FILE]",
		Short: "Sample cgroups' (or a process's) CPU time and peak memory for a while",
		Long: `Sample reads cgroups' CPU and memory files (cgroup v2, v1 where v2 lacks
them) every --interval for --duration, then writes the figures as JSON
(cpu_usec, memory_peak_bytes, peak_source, max_working_set_bytes, ...) and,
with --csv, the time series. Several --cgroup are sampled together. PATH is
relative to the cgroup root (/hopscope/lab1/server-proxy) or absolute under
/sys/fs/cgroup. With --pid and no --cgroup it reads /proc/PID instead
(labelled "proc"). A figure that cannot be read is null, with the reason
under "absent".`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if len(cgroups) == 0 && pid <= 0 {
				return usagef("give --cgroup PATH or --pid PID")
			}
			if duration <= 0 {
				return usagef("--duration must be positive (e.g. 10s)")
			}
			if interval <= 0 {
				return usagef("--interval must be positive (e.g. 100ms)")
			}
			if jsonOut == "" {
				return usagef("--json FILE is required ('-' for stdout)")
			}
			switch reader {
			case "auto":
				reader = ""
			case sampler.ReaderFiles:
			default:
				return usagef("--reader %q: want auto (a BPF cgroup iterator where it loads, else files) or files", reader)
			}
			s := sampler.New(sampler.Config{Interval: interval, Reader: reader})
			if len(cgroups) == 0 {
				if err := s.Add(sampler.Source{Name: fmt.Sprintf("pid-%d", pid), PID: pid}); err != nil {
					return usagef("%v", err)
				}
			}
			for _, cg := range cgroups {
				if err := s.Add(sampler.Source{Name: cg, Cgroup: cg}); err != nil {
					return usagef("%v", err)
				}
			}
			ctx, cancel := context.WithTimeout(c.Context(), duration)
			defer cancel()
			s.Start(ctx)
			<-ctx.Done()
			res := s.Stop()
			if err := writeJSON(jsonOut, res); err != nil {
				return err
			}
			if csvOut != "" {
				if err := writeTo(csvOut, func(f *os.File) error { return res.WriteCSV(f) }); err != nil {
					return err
				}
			}
			for _, r := range res.Sources {
				for _, e := range r.Errors {
					fmt.Fprintf(os.Stderr, "hopscope sample: %s: %s\n", r.Name, e)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&cgroups, "cgroup", nil, "cgroup path, relative to the hierarchy root or under /sys/fs/cgroup (repeat for several)")
	f.IntVar(&pid, "pid", 0, "process to read through /proc when no --cgroup is given")
	f.DurationVar(&duration, "duration", 0, "how long to sample")
	f.StringVar(&reader, "reader", "auto", "how each tick reads CPU and memory: auto (one BPF cgroup iterator pass per hierarchy where it loads, else files) or files")
	f.DurationVar(&interval, "interval", 100*time.Millisecond, "time between samples")
	f.StringVar(&jsonOut, "json", "", "where to write the figures (JSON; - for stdout)")
	f.StringVar(&csvOut, "csv", "", "where to write the time series (CSV), if wanted")
	root.AddCommand(cmd)
}

// writeTo creates path ("-": stdout) and writes it with fn.
func writeTo(path string, fn func(*os.File) error) error {
	if path == "-" {
		return fn(os.Stdout)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := fn(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// writeJSON writes v as indented JSON to path ("-": stdout).
func writeJSON(path string, v any) error {
	return writeTo(path, func(f *os.File) error {
		enc := json.NewEncoder(f)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	})
}
