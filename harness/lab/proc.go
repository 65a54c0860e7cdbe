package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hopscope/hopscope/spawn"
)

// ProcOptions says how a pod process runs.
type ProcOptions struct {
	// Cgroup is the process's cgroup relative to each hierarchy's root;
	// empty means "/hopscope/<pod>/<procName>".
	Cgroup string
	// Dir is the working directory; Env is added to the environment.
	Dir string
	Env []string
	// Log receives stdout and stderr (a file path); empty discards them.
	// Start's errors quote its last lines when the process dies at start.
	Log string
	// ReadyAddr, when set, is a TCP address polled from inside the pod
	// until it accepts a connection ("127.0.0.1:8080"); Start returns then.
	ReadyAddr string
	// ReadyTimeout bounds that wait (default 10 s).
	ReadyTimeout time.Duration
	// Detach lets the process outlive the caller (hopscope lab up): no
	// parent-death signal, its own session.
	Detach bool
}

// Proc is a process running in a pod.
type Proc struct {
	Name       string   // the procName given to Start
	PID        int      //
	Cgroup     string   // relative cgroup path
	CgroupDirs []string // absolute, one per hierarchy
	Log        string   // log file, if any

	cmd  *exec.Cmd
	argv []string
	done chan struct{}
	err  error // Wait's result, after done
}

// Start runs argv inside the pod's namespace in its own cgroup. It returns
// once the process runs (and, with ReadyAddr, accepts connections); a process
// that exits first is an error that quotes its log.
func (p *Pod) Start(ctx context.Context, procName string, argv []string, opts ProcOptions) (*Proc, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("pod %s: start %s: empty command", p.Name, procName)
	}
	if procName == "" || strings.ContainsAny(procName, "/ ") {
		return nil, fmt.Errorf("pod %s: process name %q: want a name without '/' or spaces", p.Name, procName)
	}
	rel := opts.Cgroup
	if rel == "" {
		rel = "/hopscope/" + p.Name + "/" + procName
	}
	dirs, err := makeCgroup(rel)
	if err != nil {
		return nil, fmt.Errorf("pod %s: start %s: %w", p.Name, procName, err)
	}
	pr := &Proc{Name: procName, Cgroup: rel, CgroupDirs: dirs, Log: opts.Log, done: make(chan struct{})}
	cmd, err := spawn.Command(context.Background(), spawn.Options{Netns: p.NetnsPath, Cgroups: dirs}, argv[0], argv[1:]...)
	if err != nil {
		removeCgroup(rel)
		return nil, fmt.Errorf("pod %s: start %s: %w (is it installed and on PATH?)", p.Name, procName, err)
	}
	cmd.Dir = opts.Dir
	cmd.Env = append(cmd.Env, opts.Env...)
	if opts.Detach {
		cmd.SysProcAttr.Pdeathsig = 0
		cmd.SysProcAttr.Setsid = true
	}
	if opts.Log != "" {
		f, err := os.OpenFile(opts.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			removeCgroup(rel)
			return nil, fmt.Errorf("pod %s: start %s: log: %w", p.Name, procName, err)
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		removeCgroup(rel)
		return nil, fmt.Errorf("pod %s: start %s: %w", p.Name, procName, err)
	}
	pr.cmd, pr.PID, pr.argv = cmd, cmd.Process.Pid, argv
	go func() { pr.err = cmd.Wait(); close(pr.done) }()
	p.mu.Lock()
	p.procs = append(p.procs, pr)
	p.mu.Unlock()

	timeout := opts.ReadyTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	// The trampoline joins the namespace and cgroups before it execs: wait
	// for that, so whoever reads the cgroup next sees the process there.
	uniq := map[string]bool{}
	for _, d := range dirs {
		uniq[d] = true
	}
	if err := pr.waitJoined(len(uniq), timeout); err != nil {
		pr.Stop()
		return nil, fmt.Errorf("pod %s: %s: %w", p.Name, procName, err)
	}
	if err := pr.waitReady(ctx, p.NetnsPath, opts.ReadyAddr, timeout); err != nil {
		pr.Stop()
		return nil, fmt.Errorf("pod %s: %s: %w", p.Name, procName, err)
	}
	return pr, nil
}

// waitReady polls addr from inside the namespace until it accepts, the
// process exits, or the time is up. Without addr it only checks that the
// process survives its first 50 ms.
func (pr *Proc) waitReady(ctx context.Context, nsPath, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	if addr == "" {
		select {
		case <-pr.done:
			return pr.exitErr()
		case <-time.After(50 * time.Millisecond):
			return nil
		}
	}
	for {
		select {
		case <-pr.done:
			return pr.exitErr()
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		c, err := dialIn(dctx, nsPath, addr)
		cancel()
		if err == nil {
			c.Close()
			// Someone else may hold the port: make sure ours still runs.
			select {
			case <-pr.done:
				return pr.exitErr()
			case <-time.After(20 * time.Millisecond):
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not accepting on %s after %v: %v%s", addr, timeout, err, pr.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitJoined waits until the process is in its cgroup in n hierarchies.
func (pr *Proc) waitJoined(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if cgroupCount(pr.PID, pr.Cgroup) >= n {
			return nil
		}
		select {
		case <-pr.done:
			return pr.exitErr()
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("did not join cgroup %s within %v", pr.Cgroup, timeout)
		}
	}
}

func (pr *Proc) exitErr() error {
	if pr.err == nil {
		return fmt.Errorf("exited at start with status 0: it must stay in the foreground (nginx: daemon off; haproxy: -db; no --daemon flags)%s", pr.logTail())
	}
	return fmt.Errorf("exited at start (%v)%s", pr.err, pr.logTail())
}

// logTail is the last lines of the log, for error messages.
func (pr *Proc) logTail() string {
	if pr.Log == "" {
		return ""
	}
	b, err := os.ReadFile(pr.Log)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return ": " + strings.Join(lines, " | ")
}

// Done is closed when the process has exited.
func (pr *Proc) Done() <-chan struct{} { return pr.done }

// Running reports whether the process is still running.
func (pr *Proc) Running() bool {
	select {
	case <-pr.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM, then SIGKILL after 3 s, waits for the process to go
// and removes its cgroup (killing anything the process left in it).
func (pr *Proc) Stop() error {
	if pr.cmd != nil && pr.Running() {
		pr.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-pr.done:
		case <-time.After(3 * time.Second):
			pr.cmd.Process.Kill()
			<-pr.done
		}
	}
	for _, pid := range cgroupPIDs(pr.Cgroup) {
		killPID(pid, time.Second)
	}
	if err := removeCgroup(pr.Cgroup); err != nil {
		return err
	}
	removeEmptyParents(pr.Cgroup)
	return nil
}

// Wait waits for the process to exit and returns its status.
func (pr *Proc) Wait() error {
	<-pr.done
	return pr.err
}

// killPID ends one process: SIGTERM, then SIGKILL after grace. It waits
// until the process is gone (or a zombie).
func killPID(pid int, grace time.Duration) {
	if pid <= 1 || pid == os.Getpid() {
		return
	}
	unix.Kill(pid, unix.SIGTERM)
	deadline := time.Now().Add(grace)
	for alive(pid) {
		if time.Now().After(deadline) {
			unix.Kill(pid, unix.SIGKILL)
			deadline = time.Now().Add(time.Hour)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// pidsInNetns lists processes whose network namespace is the one bound at
// path.
func pidsInNetns(path string) []int {
	var want unix.Stat_t
	if err := unix.Stat(path, &want); err != nil {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(filepath.Join("/proc", e.Name(), "ns/net"), &st) == nil && st.Ino == want.Ino && st.Dev == want.Dev {
			out = append(out, pid)
		}
	}
	return out
}

// RunOptions says how Pod.RunIn runs a command.
type RunOptions struct {
	// Cgroup, if set, is a cgroup (relative) the command runs in; it is
	// removed afterwards. Empty: the caller's cgroups.
	Cgroup string
	// Log, if set, receives the command's standard error (appended).
	Log string
}

// Run runs argv to completion inside the pod, in the caller's cgroups;
// stdout may be nil.
func (p *Pod) Run(ctx context.Context, argv []string, stdout io.Writer) error {
	return p.RunIn(ctx, argv, stdout, RunOptions{})
}

// RunIn runs argv to completion inside the pod. The command is killed when
// ctx is done. A failure quotes the end of its standard error.
func (p *Pod) RunIn(ctx context.Context, argv []string, stdout io.Writer, opts RunOptions) error {
	if len(argv) == 0 {
		return errors.New("run: empty command")
	}
	so := spawn.Options{Netns: p.NetnsPath}
	if opts.Cgroup != "" {
		dirs, err := makeCgroup(opts.Cgroup)
		if err != nil {
			return err
		}
		so.Cgroups = dirs
		defer func() {
			for _, pid := range cgroupPIDs(opts.Cgroup) {
				killPID(pid, time.Second)
			}
			removeCgroup(opts.Cgroup)
			removeEmptyParents(opts.Cgroup)
		}()
	}
	cmd, err := spawn.Command(ctx, so, argv[0], argv[1:]...)
	if err != nil {
		return fmt.Errorf("run in pod %s: %w (is it installed and on PATH?)", p.Name, err)
	}
	var stderr tailBuffer
	cmd.Stdout = stdout
	cmd.Stderr = &stderr
	if opts.Log != "" {
		f, err := os.OpenFile(opts.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("run in pod %s: log: %w", p.Name, err)
		}
		defer f.Close()
		cmd.Stderr = io.MultiWriter(&stderr, f)
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s in pod %s: %w: %s", filepath.Base(argv[0]), p.Name, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = append(t.b[:0], t.b[len(t.b)-4096:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
