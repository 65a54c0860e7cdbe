package app

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/hopscope/hopscope/reqid"
)

func TestParseDelay(t *testing.T) {
	tests := []struct {
		in   string
		ok   bool
		mean time.Duration
		lo   time.Duration
		hi   time.Duration
	}{
		{"0", true, 0, 0, 0},
		{"1ms", true, time.Millisecond, time.Millisecond, time.Millisecond},
		{"exp:2ms", true, 2 * time.Millisecond, 0, time.Second},
		{"uniform:1ms-3ms", true, 2 * time.Millisecond, time.Millisecond, 3 * time.Millisecond},
		{"-1ms", false, 0, 0, 0},
		{"exp:0", false, 0, 0, 0},
		{"uniform:3ms-1ms", false, 0, 0, 0},
		{"normal:1ms", false, 0, 0, 0},
		{"fast", false, 0, 0, 0},
	}
	for _, tc := range tests {
		d, err := ParseDelay(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		if d.Mean() != tc.mean {
			t.Errorf("%q: mean %v, want %v", tc.in, d.Mean(), tc.mean)
		}
		var sum time.Duration
		for i := 0; i < 20000; i++ {
			v := d.Sample()
			if v < tc.lo || v > tc.hi {
				t.Fatalf("%q: sample %v outside [%v, %v]", tc.in, v, tc.lo, tc.hi)
			}
			sum += v
		}
		if m := sum / 20000; m < tc.mean*95/100 || m > tc.mean*105/100 {
			t.Errorf("%q: sample mean %v, want %v", tc.in, m, tc.mean)
		}
		if again, _ := ParseDelay(d.String()); again != d {
			t.Errorf("%q: String %q does not parse back", tc.in, d.String())
		}
	}
}

func TestMessageRoundTrip(t *testing.T) {
	m := Message{ID: reqid.String(0xabc), Payload: []byte("payload")}
	b := m.AppendMarshal(nil)
	// The probe looks for the ID in the first bytes of the message.
	if i := bytes.Index(b, []byte(reqid.Marker)); i != 2 {
		t.Errorf("ID at offset %d of the message, want 2 (right after tag and length)", i)
	}
	var got Message
	if err := got.Unmarshal(append(b, 0x18, 0x01)); err != nil { // plus an unknown varint field 3
		t.Fatal(err)
	}
	if got.ID != m.ID || string(got.Payload) != "payload" {
		t.Errorf("got %+v", got)
	}
	if err := got.Unmarshal([]byte{0x0a, 0x10, 'h'}); err == nil {
		t.Error("a truncated message decoded without error")
	}
}

func serve(t *testing.T, cfg Config) (string, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]string, 1)
	cfg.OnListen = func(h, g net.Addr) {
		var a [2]string
		if h != nil {
			a[0] = h.String()
		}
		if g != nil {
			a[1] = g.String()
		}
		ready <- a
	}
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, cfg) }()
	var a [2]string
	select {
	case a = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return a[0], a[1]
}

// The app echoes the ID over HTTP (header and body) and gRPC, waits its
// delay, pads to the size, and stamps each request.
func TestServe(t *testing.T) {
	stamps := filepath.Join(t.TempDir(), "stamps.csv")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan [2]string, 1)
	cfg := Config{Listen: "127.0.0.1:0", GRPCListen: "127.0.0.1:0", Size: 100, Stamps: stamps,
		OnListen: func(h, g net.Addr) { ready <- [2]string{h.String(), g.String()} }}
	cfg.Delay, _ = ParseDelay("2ms")
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, cfg) }()
	a := <-ready

	start := time.Now()
	resp, err := http.Get("http://" + a[0] + "/x?a=1&" + reqid.String(7))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if time.Since(start) < 2*time.Millisecond {
		t.Errorf("answered in %v, before the 2ms delay", time.Since(start))
	}
	if resp.Header.Get(IDHeader) != reqid.String(7) || !strings.HasPrefix(string(body), reqid.String(7)+"\n") || len(body) != 100 {
		t.Errorf("header %q body %q (%d bytes)", resp.Header.Get(IDHeader), body, len(body))
	}

	cc, err := grpc.NewClient("passthrough:///"+a[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	out := new(Message)
	if err := cc.Invoke(context.Background(), EchoMethod, &Message{ID: reqid.String(8), Payload: []byte("p")}, out, CallOptions()...); err != nil {
		t.Fatal(err)
	}
	if out.ID != reqid.String(8) || len(out.Payload) != 100 {
		t.Errorf("grpc response %q with %d payload bytes", out.ID, len(out.Payload))
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(stamps)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := ReadStamps(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0].ID != 7 || st[1].ID != 8 {
		t.Fatalf("stamps %+v", st)
	}
	for _, s := range st {
		if d := s.Send - s.Recv; d < int64(2*time.Millisecond) || d > int64(50*time.Millisecond) {
			t.Errorf("stamp %+v: send-recv %v, want the 2ms delay", s, time.Duration(d))
		}
	}
}

func TestServeNeedsAnAddress(t *testing.T) {
	if err := Serve(context.Background(), Config{}); err == nil {
		t.Error("Serve with no address returned nil")
	}
	h, _ := serve(t, Config{Listen: "127.0.0.1:0"})
	if err := Serve(context.Background(), Config{Listen: h}); err == nil {
		t.Error("Serve on a busy port returned nil")
	}
}
