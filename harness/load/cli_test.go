package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hopscope/hopscope/harness/app"
)

// Bad input at the CLI: a one-line message that says what to fix, a
// non-zero exit, no hang and no stack trace.
func TestCLIBadInput(t *testing.T) {
	bin := hopscopeBin(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	h, _ := inProcessApp(t, app.Config{Listen: "127.0.0.1:0"})
	tests := []struct {
		args []string
		code int
		hint string
	}{
		{[]string{"load", "--rate", "10", "not a url"}, 2, "want http://HOST:PORT/PATH"},
		{[]string{"load", "--rate", "10", "https://" + h + "/"}, 2, "TLS is not supported"},
		{[]string{"load", "--rate", "10", "--duration", "1s", "http://" + closed + "/"}, 1, "connection refused"},
		{[]string{"load", "--rate", "10", "--duration", "1s", "grpc://" + closed}, 1, "connect to"},
		{[]string{"load", "--rate", "0", "http://" + h + "/"}, 2, "positive number"},
		{[]string{"load", "--rate", "-5", "http://" + h + "/"}, 2, "positive number"},
		{[]string{"load", "--rate", "fast", "http://" + h + "/"}, 2, "or max"},
		{[]string{"load", "--rate", "10", "--duration", "soon", "http://" + h + "/"}, 2, "invalid duration"},
		{[]string{"load", "--rate", "10", "--duration", "-1s", "http://" + h + "/"}, 2, "positive duration"},
		{[]string{"load", "--rate", "10", "--procs", "-1", "http://" + h + "/"}, 2, "--procs"},
		{[]string{"load", "--rate", "10"}, 2, "exactly one URL"},
		{[]string{"load", "http://" + h + "/"}, 2, "--rate"},
		{[]string{"app", "--listen", "127.0.0.1:0", "--delay", "fast"}, 2, "exp:1ms"},
		{[]string{"app"}, 2, "--listen"},
	}
	for _, tc := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		cmd := exec.CommandContext(ctx, bin, tc.args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		err := cmd.Run()
		hung := ctx.Err() != nil
		cancel()
		var ee *exec.ExitError
		code := 0
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		msg := strings.TrimRight(stderr.String(), "\n")
		switch {
		case hung:
			t.Errorf("%v: hung (killed after %v)", tc.args, time.Since(start))
		case code != tc.code:
			t.Errorf("%v: exit %d, want %d; stderr %q", tc.args, code, tc.code, msg)
		case strings.Contains(msg, "\n") || !strings.Contains(msg, tc.hint):
			t.Errorf("%v: stderr %q, want one line mentioning %q", tc.args, msg, tc.hint)
		}
	}
}

// Ctrl-C prints and writes what was measured so far.
func TestCLIInterrupt(t *testing.T) {
	bin := hopscopeBin(t)
	h, _ := inProcessApp(t, app.Config{Listen: "127.0.0.1:0"})
	dir := t.TempDir()
	jsonF, hlogF, recF := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.hlog"), filepath.Join(dir, "r.csv")
	cmd := exec.Command(bin, "load", "--rate", "100", "--duration", "1m", "--json", jsonF, "--hlog", hlogF,
		"--records", recF, "http://"+h+"/")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit: %v; stderr %q", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("did not stop within 5 s of SIGINT")
	}
	if !strings.Contains(stdout.String(), "INTERRUPTED") || !strings.Contains(stdout.String(), "latency") {
		t.Errorf("stdout %q: want the table, marked interrupted", stdout.String())
	}
	b, err := os.ReadFile(jsonF)
	if err != nil {
		t.Fatal(err)
	}
	var res Result
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted || res.Requests < 50 || res.LatencyHist.H == nil || res.LatencyHist.H.TotalCount() != res.OK {
		t.Errorf("result: interrupted %v requests %d ok %d", res.Interrupted, res.Requests, res.OK)
	}
	// --procs defaults to one P per 10,000 req/s of open loop.
	if os.Getenv("GOMAXPROCS") == "" && res.Procs != 1 {
		t.Errorf("procs %d at 100 req/s, want 1 (AutoProcs)", res.Procs)
	}
	for _, f := range []string{hlogF, recF} {
		if st, err := os.Stat(f); err != nil || st.Size() < 100 {
			t.Errorf("%s: %v, want it written", f, err)
		}
	}
}

func TestAutoProcs(t *testing.T) {
	for _, tc := range []struct {
		cfg        Config
		ncpu, want int
	}{
		{Config{Rate: 20}, 8, 1},
		{Config{Rate: 2000}, 8, 1},
		{Config{Rate: 10000}, 8, 1},
		{Config{Rate: 10001}, 8, 2},
		{Config{Rate: 45000}, 8, 5},
		{Config{Rate: 1e6}, 8, 8},
		{Config{Rate: 1e6}, 1, 1},
		{Config{ClosedLoop: true}, 8, 8},
	} {
		if got := AutoProcs(tc.cfg, tc.ncpu); got != tc.want {
			t.Errorf("AutoProcs(rate %g, closed %v, ncpu %d) = %d, want %d", tc.cfg.Rate, tc.cfg.ClosedLoop, tc.ncpu, got, tc.want)
		}
	}
}
