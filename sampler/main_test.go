package sampler

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hopscope/hopscope/spawn"
	"golang.org/x/sys/unix"
)

// childEnv makes the test binary, re-executed, a child that burns CPU or
// grows memory on command instead of running the tests.
const childEnv = "HSS_CHILD"

func TestMain(m *testing.M) {
	if mode, ok := os.LookupEnv(childEnv); ok {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

// child: "serve" reads commands from stdin until EOF: "grow MIB" maps MIB
// MiB, touches every page, holds them 50 ms, unmaps them and answers "done";
// "burn MS" burns MS milliseconds of CPU and answers "done USEC", the CPU
// time its own rusage (RUSAGE_SELF, all threads) counted from before it
// waited for the command until just before the answer.
func child(mode string) int {
	if mode != "serve" {
		fmt.Fprintln(os.Stderr, "unknown child mode", mode)
		return 2
	}
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	// mark: the CPU used so far, taken before waiting for the next command,
	// so that waking up and reading it count inside the burn's figure.
	for mark := ownCPU(); sc.Scan(); mark = ownCPU() {
		var n int
		switch {
		case strings.HasPrefix(sc.Text(), "grow "):
			fmt.Sscanf(sc.Text(), "grow %d", &n)
			if err := grow(n<<20, 50*time.Millisecond); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			fmt.Println("done")
		case strings.HasPrefix(sc.Text(), "burn "):
			fmt.Sscanf(sc.Text(), "burn %d", &n)
			burn(mark + time.Duration(n)*time.Millisecond)
			fmt.Println("done", (ownCPU() - mark).Microseconds())
		default:
			fmt.Fprintln(os.Stderr, "bad command", sc.Text())
			return 2
		}
	}
	return 0
}

func ownCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// burn spins until the process has used until of CPU.
func burn(until time.Duration) {
	x := uint64(1)
	for ownCPU() < until {
		for i := 0; i < 1_000_000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	if x == 42 {
		fmt.Println(x)
	}
}

// grow maps n bytes outside the Go heap (so freeing is immediate), has the
// kernel fault every page in at once (MAP_POPULATE, so the spike is short),
// writes every page anyway, holds it, and unmaps it.
func grow(n int, hold time.Duration) error {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap %d: %w", n, err)
	}
	for i := 0; i < n; i += 4096 {
		b[i] = 1
	}
	time.Sleep(hold)
	return unix.Munmap(b)
}

// needRoot skips where the machine truly cannot make cgroups.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
	if _, err := DetectMode(); err != nil {
		t.Skip(err)
	}
}

// testCgroup makes /hopscope-test-sampler-NAME (removing a leftover first)
// and removes it when the test ends.
func testCgroup(t *testing.T, name string) (string, []string) {
	t.Helper()
	rel := "/hopscope-test-sampler-" + name
	if err := RemoveCgroup(rel); err != nil {
		t.Fatalf("remove leftover: %v", err)
	}
	dirs, err := MakeCgroup(rel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := RemoveCgroup(rel); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return rel, dirs
}

// startChild runs the test binary as a child in dirs; the child is killed
// and reaped when the test ends (before the cgroup is removed).
func startChild(t *testing.T, dirs []string, mode string) (*exec.Cmd, io.WriteCloser, *bufio.Scanner) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := spawn.Command(context.Background(), spawn.Options{Cgroups: dirs}, self)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(cmd.Env, childEnv+"="+mode)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, in, bufio.NewScanner(out)
}

// burnIn has the serving child burn ms of CPU; it returns the CPU time the
// child's own rusage counted for it.
func burnIn(t *testing.T, in io.Writer, out *bufio.Scanner, ms int) int64 {
	t.Helper()
	fmt.Fprintln(in, "burn", ms)
	if !out.Scan() {
		t.Fatalf("child ended while burning: %v", out.Err())
	}
	var usec int64
	if _, err := fmt.Sscanf(out.Text(), "done %d", &usec); err != nil {
		t.Fatalf("child said %q: %v", out.Text(), err)
	}
	return usec
}

// expect reads the child's next line and fails unless it is want.
func expect(t *testing.T, sc *bufio.Scanner, want string) {
	t.Helper()
	if !sc.Scan() {
		t.Fatalf("child ended before saying %q: %v", want, sc.Err())
	}
	if sc.Text() != want {
		t.Fatalf("child said %q, want %q", sc.Text(), want)
	}
}
