// Command hopscope benchmarks sidecar proxies and shows where their latency
// goes. It is thin: flags and wiring; the work is in the packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

var version = "dev"

// root is the hopscope command; each subcommand adds itself in its file's init.
var root = &cobra.Command{
	Use:           "hopscope",
	Short:         "Benchmark sidecar proxies and attribute their latency, hop by hop",
	Version:       version,
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "hopscope: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError marks a mistake in the command line (exit status 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// usagef returns a usage error: a one-line message that says what to fix.
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}
