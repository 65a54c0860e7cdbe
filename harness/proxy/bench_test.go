package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/hopscope/hopscope/reqid"
)

// BenchmarkRoundTrip compares one keep-alive HTTP/1.1 round trip on
// loopback straight to a server with the same through the reference proxy
// (with and without stamps): the difference is the proxy's cost.
func BenchmarkRoundTrip(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	up := ln.Addr().String()

	run := func(b *testing.B, addr string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		req := []byte("GET /?" + reqid.String(1) + " HTTP/1.1\r\nHost: b\r\n\r\n")
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := c.Write(req); err != nil {
				b.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	b.Run("direct", func(b *testing.B) { run(b, up) })
	b.Run("proxy", func(b *testing.B) {
		addr, _ := startProxy(b, Config{Upstream: up})
		run(b, addr)
	})
	b.Run("proxy-stamps", func(b *testing.B) {
		addr, _ := startProxy(b, Config{Upstream: up, Stamps: b.TempDir() + "/s.csv"})
		run(b, addr)
	})
}
