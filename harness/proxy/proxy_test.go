package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hopscope/hopscope/reqid"
)

// startProxy runs Serve on a loopback port until the test ends and returns
// its address and a function that stops it (and so flushes the stamps).
func startProxy(t testing.TB, cfg Config) (addr string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	cfg.Listen = "127.0.0.1:0"
	cfg.OnListen = func(a net.Addr) { ready <- a.String() }
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, cfg) }()
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("proxy: %v", err)
	}
	var once bool
	stop = func() {
		if once {
			return
		}
		once = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("proxy: %v", err)
		}
	}
	t.Cleanup(stop)
	return addr, stop
}

func startUpstream(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func testHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte("part1-"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part2"))
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/echo":
			fmt.Fprintf(w, "echo:%s", body)
		default:
			w.Header().Set("X-Query", r.URL.RawQuery)
			io.WriteString(w, "hello "+r.URL.RawQuery)
		}
	})
}

func readResp(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

func TestHTTP1KeepAliveAndFraming(t *testing.T) {
	up := startUpstream(t, testHandler())
	stamps := filepath.Join(t.TempDir(), "stamps.csv")
	addr, stop := startProxy(t, Config{Upstream: up, Stamps: stamps})

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	var local string
	for i, tc := range []struct {
		req, method, want string
		status            int
	}{
		{"GET /x?" + reqid.String(1) + " HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "hello " + reqid.String(1), 200},
		{"POST /echo?" + reqid.String(2) + " HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabcde", "POST", "echo:abcde", 200},
		{"POST /echo?" + reqid.String(3) + " HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n", "POST", "echo:abcde", 200},
		{"GET /chunked?" + reqid.String(4) + " HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "part1-part2", 200},
		{"GET /empty?" + reqid.String(5) + " HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "", 204},
		{"HEAD /x?" + reqid.String(6) + " HTTP/1.1\r\nHost: a\r\n\r\n", "HEAD", "", 200},
		{"GET /no-id HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "hello ", 200},
	} {
		if _, err := io.WriteString(c, tc.req); err != nil {
			t.Fatal(err)
		}
		resp, body := readResp(t, br, tc.method)
		if resp.StatusCode != tc.status || body != tc.want {
			t.Errorf("request %d: %d %q, want %d %q", i, resp.StatusCode, body, tc.status, tc.want)
		}
		if i == 0 {
			local = c.LocalAddr().String()
		}
	}
	if c.LocalAddr().String() != local {
		t.Errorf("downstream connection changed")
	}
	// Pipelined: two requests in one write, answered in order. The pause
	// first gives the kernel's deferred work time to turn receive stamps on
	// (it runs when the first socket asks; see Serve).
	time.Sleep(50 * time.Millisecond)
	io.WriteString(c, "GET /a?"+reqid.String(7)+" HTTP/1.1\r\nHost: a\r\n\r\nGET /b?"+reqid.String(8)+" HTTP/1.1\r\nHost: a\r\n\r\n")
	for _, id := range []uint64{7, 8} {
		if _, body := readResp(t, br, "GET"); body != "hello "+reqid.String(id) {
			t.Errorf("pipelined %d: %q", id, body)
		}
	}
	c.Close()
	stop()

	f, err := os.Open(stamps)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := ReadStamps(f)
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, s := range got {
		ids = append(ids, s.ID)
		if !(s.ReqRead > 0 && s.ReqRead <= s.ReqWrite && s.ReqWrite <= s.RespRead && s.RespRead <= s.RespWrite) {
			t.Errorf("stamp %+v out of order", s)
		}
		// The kernel received before the read returned and queued the
		// segment after the write was called, each within a second. Send
		// stamps are always there; receive stamps may be missing until the
		// kernel has turned them on, and must be there for the pipelined
		// requests 7 and 8.
		for _, k := range []struct {
			name          string
			before, after int64
			rx            bool
		}{
			{"k_req_rx <= req_read", s.KReqRx, s.ReqRead, true},
			{"req_write <= k_req_tx", s.ReqWrite, s.KReqTx, false},
			{"k_resp_rx <= resp_read", s.KRespRx, s.RespRead, true},
			{"resp_write <= k_resp_tx", s.RespWrite, s.KRespTx, false},
		} {
			if k.rx && k.before == 0 && s.ID < 7 {
				continue
			}
			if k.before == 0 || k.after == 0 || k.before > k.after || k.after-k.before > int64(time.Second) {
				t.Errorf("request %d: %s: %d, %d", s.ID, k.name, k.before, k.after)
			}
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	if fmt.Sprint(ids) != "[1 2 3 4 5 6 7 8]" {
		t.Errorf("stamped ids %v, want 1..8 (the request without an ID is not stamped)", ids)
	}
}

func TestHTTP1Delay(t *testing.T) {
	up := startUpstream(t, testHandler())
	stamps := filepath.Join(t.TempDir(), "stamps.csv")
	const delay = 2 * time.Millisecond
	addr, stop := startProxy(t, Config{Upstream: up, Stamps: stamps, Delay: delay})
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	for i := 0; i < 50; i++ {
		resp, err := client.Get("http://" + addr + "/x?" + reqid.String(uint64(i+1)))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	stop()
	b, _ := os.ReadFile(stamps)
	got, err := ReadStamps(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 50 {
		t.Fatalf("%d stamps, want 50", len(got))
	}
	var waits []int64
	for _, s := range got {
		waits = append(waits, s.ReqWrite-s.ReqRead)
	}
	sort.Slice(waits, func(i, j int) bool { return waits[i] < waits[j] })
	if waits[0] < int64(delay) {
		t.Errorf("shortest delay %v, want >= %v", time.Duration(waits[0]), delay)
	}
	if med := time.Duration(waits[len(waits)/2]); med > delay+300*time.Microsecond {
		t.Errorf("median delay %v, want within 300µs of %v", med, delay)
	}
}

func TestUpstreamDown(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	addr, _ := startProxy(t, Config{Upstream: dead})
	resp, err := http.Get("http://" + addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), dead) {
		t.Errorf("dead upstream: %d %q, want 502 naming %s", resp.StatusCode, body, dead)
	}
}

func TestUpstreamClosesKeptAliveConnection(t *testing.T) {
	// An upstream that closes after every response without saying so: the
	// proxy redials once instead of failing the next request.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	addr, _ := startProxy(t, Config{Upstream: ln.Addr().String()})
	client := &http.Client{}
	for i := 0; i < 5; i++ {
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
		time.Sleep(5 * time.Millisecond) // let the close arrive
	}
}

func TestConfigErrors(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Upstream: "127.0.0.1:1"}, "listen"},
		{Config{Listen: "127.0.0.1:0", Upstream: "nohostport"}, "HOST:PORT"},
		{Config{Listen: "127.0.0.1:0", Upstream: "127.0.0.1:1", Delay: -1}, "delay"},
		{Config{Listen: "127.0.0.1:0", Upstream: "127.0.0.1:1", Stamps: "/no/such/dir/s.csv"}, "stamps"},
	} {
		if err := Serve(ctx, c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Serve(%+v): %v, want an error about %q", c.cfg, err, c.want)
		}
	}
	// A port in use.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	err := Serve(ctx, Config{Listen: ln.Addr().String(), Upstream: "127.0.0.1:1"})
	if err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("port in use: %v", err)
	}
}

func TestReadStampsBad(t *testing.T) {
	for _, in := range []string{"", "nope\n", StampHeader + "\nzz,1,2,3,4\n", StampHeader + "\n01,1,2\n"} {
		if _, err := ReadStamps(strings.NewReader(in)); err == nil {
			t.Errorf("ReadStamps(%q): no error", in)
		}
	}
}
