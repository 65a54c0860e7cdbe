package load

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hopscope/hopscope/harness/app"
)

// The CLI tests run the real binary, built once into a temporary directory.
var (
	binDir   string
	buildOne sync.Once
	binPath  string
	buildErr error
)

// appEnv, when set in the environment, makes the test binary serve the app
// (HTTP and gRPC on loopback, flags in the variable) instead of running
// tests: the app process the tests pause with SIGSTOP, independent of the
// rest of the CLI building.
const appEnv = "HSG_TEST_APP"

func TestMain(m *testing.M) {
	if spec, ok := os.LookupEnv(appEnv); ok {
		os.Exit(serveApp(spec))
	}
	var err error
	binDir, err = os.MkdirTemp("", "hsg-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// hopscopeBin builds ./cmd/hopscope once.
func hopscopeBin(t testing.TB) string {
	t.Helper()
	buildOne.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			gobin = "/usr/local/go/bin/go"
		}
		binPath = filepath.Join(binDir, "hopscope")
		cmd := exec.Command(gobin, "build", "-o", binPath, "github.com/hopscope/hopscope/cmd/hopscope")
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/hopscope: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// appProc is `hopscope app` running as a child process.
type appProc struct {
	cmd    *exec.Cmd
	HTTP   string
	GRPC   string
	Stamps string
	done   chan struct{}
}

// serveApp is the child side of startApp: spec is "SIZE STAMPSFILE".
func serveApp(spec string) int {
	var cfg app.Config
	if _, err := fmt.Sscan(spec, &cfg.Size, &cfg.Stamps); err != nil {
		fmt.Fprintln(os.Stderr, "bad", appEnv, err)
		return 2
	}
	cfg.Listen, cfg.GRPCListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.OnListen = func(h, g net.Addr) {
		fmt.Fprintf(os.Stderr, "app: http on %s\napp: grpc on %s\n", h, g)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := app.Serve(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startApp runs the app as a child process (this test binary, see appEnv)
// on loopback ports chosen by the kernel, with a response size.
func startApp(t *testing.T, size int) *appProc {
	t.Helper()
	stamps := filepath.Join(t.TempDir(), "stamps.csv")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d %s", appEnv, size, stamps))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &appProc{cmd: cmd, Stamps: stamps, done: make(chan struct{})}
	sc := bufio.NewScanner(stderr)
	for (p.HTTP == "" || p.GRPC == "") && sc.Scan() {
		line := sc.Text()
		if a, ok := strings.CutPrefix(line, "app: http on "); ok {
			p.HTTP = a
		}
		if a, ok := strings.CutPrefix(line, "app: grpc on "); ok {
			p.GRPC = a
		}
	}
	go func() {
		for sc.Scan() {
			t.Logf("app: %s", sc.Text())
		}
		cmd.Wait()
		close(p.done)
	}()
	if p.HTTP == "" || p.GRPC == "" {
		cmd.Process.Kill()
		<-p.done
		t.Fatal("the app did not report its listen addresses")
	}
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop ends the app with SIGTERM (so it writes its stamps), by PID.
func (p *appProc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGCONT)
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Errorf("app pid %d did not stop on SIGTERM", p.cmd.Process.Pid)
		p.cmd.Process.Kill()
		<-p.done
	}
}

// stamps stops the app and reads what it stamped.
func (p *appProc) stamps(t *testing.T) []app.Stamp {
	p.stop(t)
	f, err := os.Open(p.Stamps)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := app.ReadStamps(f)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// inProcessApp serves the app inside the test binary.
func inProcessApp(t *testing.T, cfg app.Config) (httpAddr, grpcAddr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	cfg.OnListen = func(h, g net.Addr) {
		if h != nil {
			httpAddr = h.String()
		}
		if g != nil {
			grpcAddr = g.String()
		}
		close(ready)
	}
	done := make(chan error, 1)
	go func() { done <- app.Serve(ctx, cfg) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("app: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("app: %v", err)
		}
	})
	return httpAddr, grpcAddr
}
