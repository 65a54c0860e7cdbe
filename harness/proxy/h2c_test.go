package proxy

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/hopscope/hopscope/harness/app"
	"github.com/hopscope/hopscope/reqid"
)

type echo struct{}

func (echo) Call(ctx context.Context, req *app.Message) (*app.Message, error) {
	grpc.SetTrailer(ctx, metadata.Pairs("x-echo-trailer", req.ID))
	if string(req.Payload) == "fail" {
		return nil, status.Error(codes.FailedPrecondition, "asked to fail")
	}
	return &app.Message{ID: req.ID, Payload: req.Payload}, nil
}

func TestH2CGRPCWithTrailers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	gs.RegisterService(&app.EchoServiceDesc, echo{})
	go gs.Serve(ln)
	defer gs.Stop()

	stamps := filepath.Join(t.TempDir(), "stamps.csv")
	addr, stop := startProxy(t, Config{Upstream: ln.Addr().String(), Stamps: stamps, H2C: true})
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for i := uint64(1); i <= 5; i++ {
		var resp app.Message
		var tr metadata.MD
		payload := "p"
		if i == 5 {
			payload = "fail"
		}
		err := cc.Invoke(context.Background(), app.EchoMethod, &app.Message{ID: reqid.String(i), Payload: []byte(payload)}, &resp,
			append(app.CallOptions(), grpc.Trailer(&tr))...)
		if i == 5 {
			if status.Code(err) != codes.FailedPrecondition {
				t.Errorf("error status through the proxy: %v, want FailedPrecondition", err)
			}
		} else if err != nil || resp.ID != reqid.String(i) || string(resp.Payload) != "p" {
			t.Errorf("call %d: %v %+v", i, err, resp)
		}
		if got := tr.Get("x-echo-trailer"); len(got) != 1 || got[0] != reqid.String(i) {
			t.Errorf("call %d: trailer %v, want %s", i, got, reqid.String(i))
		}
	}
	stop()
	f, _ := os.Open(stamps)
	defer f.Close()
	got, err := ReadStamps(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("%d stamps, want 5", len(got))
	}
	for _, s := range got {
		if s.ID < 1 || s.ID > 5 || !(s.ReqRead <= s.ReqWrite && s.ReqWrite <= s.RespRead && s.RespRead <= s.RespWrite) {
			t.Errorf("stamp %+v", s)
		}
	}
}

// BenchmarkH2CRoundTrip compares one unary gRPC call on loopback straight
// to the server with the same through the reference proxy in h2c mode.
func BenchmarkH2CRoundTrip(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	gs.RegisterService(&app.EchoServiceDesc, echo{})
	go gs.Serve(ln)
	defer gs.Stop()
	run := func(b *testing.B, addr string) {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		req := &app.Message{ID: reqid.String(1), Payload: []byte("p")}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			var resp app.Message
			if err := cc.Invoke(context.Background(), app.EchoMethod, req, &resp, app.CallOptions()...); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, ln.Addr().String()) })
	b.Run("proxy", func(b *testing.B) {
		addr, _ := startProxy(b, Config{Upstream: ln.Addr().String(), H2C: true})
		run(b, addr)
	})
}
