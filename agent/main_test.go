package agent

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/hopscope/hopscope/harness/app"
	"github.com/hopscope/hopscope/harness/proxy"
)

// childArg makes the test binary act as a container's process (the
// reference proxy or the test app), started by spawn inside a pod's netns
// and cgroups: TEST-BINARY hsk-child ROLE ARGS...
const childArg = "hsk-child"

func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == childArg {
		os.Exit(child(os.Args[2], os.Args[3:]))
	}
	os.Exit(m.Run())
}

// childCmd is the command line of a child in role.
func childCmd(t *testing.T, role string, args ...string) []string {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{self, childArg, role}, args...)
}

func child(role string, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var err error
	switch role {
	case "proxy": // listen upstream
		err = proxy.Serve(ctx, proxy.Config{Listen: args[0], Upstream: args[1]})
	case "app": // listen
		err = app.Serve(ctx, app.Config{Listen: args[0], Size: 64})
	default:
		err = fmt.Errorf("unknown child role %q", role)
	}
	if err != nil && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "child %s: %v\n", role, err)
		return 1
	}
	return 0
}
