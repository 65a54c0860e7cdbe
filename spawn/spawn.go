package spawn

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// envKey carries the trampoline's instructions to the re-executed child.
const envKey = "HOPSCOPE_SPAWN"

// Options says where the command runs.
type Options struct {
	// Netns is a network namespace file (/var/run/netns/NAME,
	// /proc/PID/ns/net); empty keeps the caller's.
	Netns string `json:"netns,omitempty"`
	// Cgroups are cgroup directories (absolute paths under /sys/fs/cgroup)
	// the command joins before it runs: one per hierarchy on hybrid hosts.
	Cgroups []string `json:"cgroups,omitempty"`
}

type instructions struct {
	Options
	Path string   `json:"path"`
	Args []string `json:"args"`
}

// Command returns a Cmd that runs name with args under opts. The Cmd is
// ordinary: set Stdout, Env (the trampoline variable is added), Dir, and
// start and wait on it as usual; its Process is the real command's PID,
// since the trampoline execs in place.
func Command(ctx context.Context, opts Options, name string, args ...string) (*exec.Cmd, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, fmt.Errorf("spawn %s: %w", name, err)
	}
	if path, err = filepath.Abs(path); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("spawn: find own executable: %w", err)
	}
	in, err := json.Marshal(instructions{Options: opts, Path: path, Args: append([]string{name}, args...)})
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Args = []string{name} // what ps shows until the exec
	cmd.Env = append(os.Environ(), envKey+"="+string(in))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

// The trampoline. It runs before main and before any test, so nothing else
// of the program has started; a failure exits with status 127 and a message.
func init() {
	raw, ok := os.LookupEnv(envKey)
	if !ok {
		return
	}
	os.Unsetenv(envKey)
	var in instructions
	if err := json.Unmarshal([]byte(raw), &in); err != nil {
		fail("bad instructions: %v", err)
	}
	runtime.LockOSThread() // setns applies to this thread; exec keeps it
	if in.Netns != "" {
		fd, err := unix.Open(in.Netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			fail("open netns %s: %v", in.Netns, err)
		}
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			fail("join netns %s: %v", in.Netns, err)
		}
		unix.Close(fd)
	}
	for _, cg := range in.Cgroups {
		procs := filepath.Join(cg, "cgroup.procs")
		if err := os.WriteFile(procs, []byte(fmt.Sprint(os.Getpid())), 0); err != nil {
			fail("join cgroup %s: %v", cg, err)
		}
	}
	err := syscall.Exec(in.Path, in.Args, os.Environ())
	fail("exec %s: %v", in.Path, err)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "hopscope spawn: "+format+"\n", args...)
	os.Exit(127)
}
