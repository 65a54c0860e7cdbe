package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// hopscopeBin is the hopscope binary built once for the tests: the pods run
// `hopscope app` and `hopscope proxy` from it.
var hopscopeBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if bin := os.Getenv("HSL_BIN"); bin != "" {
		// A runner subprocess of TestCleanupAfterKill: reuse the parent's build.
		hopscopeBin = bin
		StateDir = filepath.Join(os.TempDir(), "hsl-state")
	} else if os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "hsl-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		hopscopeBin = filepath.Join(dir, "hopscope")
		cmd := exec.Command("go", "build", "-o", hopscopeBin, "github.com/hopscope/hopscope/cmd/hopscope")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build hopscope for the lab tests:", err)
			return 1
		}
		StateDir = filepath.Join(os.TempDir(), "hsl-state")
	}
	code := m.Run()
	os.Remove(StateDir) // only if empty: a failed test's leftovers stay for a look
	return code
}
