package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hopscope/hopscope/clock"
	"github.com/hopscope/hopscope/harness/load/pace"
	"github.com/hopscope/hopscope/reqid"
)

// hopHeaders are connection-specific and never forwarded.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Http2-Settings"}

// h2cProxy forwards HTTP/2 cleartext requests (gRPC) to one upstream over
// HTTP/2, trailers included. Stamps are taken in the handler: ReqRead once
// the whole request body is read, RespRead once the whole upstream response
// (and its trailers) is read.
type h2cProxy struct {
	cfg    Config
	rt     *http.Transport
	stamps *stampWriter
	timers sync.Pool
}

func serveH2C(ctx context.Context, cfg Config, ln net.Listener, sw *stampWriter) error {
	// HTTP/2 with prior knowledge on both sides, as gRPC speaks it.
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	p := &h2cProxy{
		cfg:    cfg,
		stamps: sw,
		rt: &http.Transport{
			Protocols:   &h2c,
			DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		},
	}
	srv := &http.Server{Handler: p, Protocols: &h2c}
	go func() {
		<-ctx.Done()
		srv.Close()
		p.rt.CloseIdleConnections()
	}()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) && ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("proxy: serve h2c: %w", err)
}

func (p *h2cProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	st := Stamp{ReqRead: clock.Now()}
	if err != nil {
		http.Error(w, "read request: "+err.Error(), http.StatusBadRequest)
		return
	}
	id, hasID := reqid.Find([]byte(r.URL.RawQuery))
	if !hasID {
		id, hasID = reqid.Find(body)
	}
	st.ID = id
	if p.cfg.Delay > 0 {
		p.sleepUntil(st.ReqRead + int64(p.cfg.Delay))
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+p.cfg.Upstream+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Host = r.Host
	for k, v := range r.Header {
		out.Header[k] = v
	}
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	if te := r.Header.Get("Te"); strings.Contains(te, "trailers") {
		out.Header.Set("Te", "trailers")
	} else {
		out.Header.Del("Te")
	}
	out.ContentLength = int64(len(body))
	st.ReqWrite = clock.Now()
	resp, err := p.rt.RoundTrip(out)
	if err != nil {
		http.Error(w, "upstream "+p.cfg.Upstream+": "+err.Error(), http.StatusBadGateway)
		return
	}
	rbody, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	st.RespRead = clock.Now()
	if err != nil {
		// Headers may be sent already by nothing: answer 502.
		http.Error(w, "upstream body: "+err.Error(), http.StatusBadGateway)
		return
	}
	h := w.Header()
	for k, v := range resp.Header {
		h[k] = v
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	// Announce the trailers (gRPC's grpc-status, grpc-message) so they
	// follow the body as HTTP/2 trailers.
	for k := range resp.Trailer {
		h.Add("Trailer", k)
	}
	st.RespWrite = clock.Now()
	w.WriteHeader(resp.StatusCode)
	w.Write(rbody)
	for k, v := range resp.Trailer {
		h[k] = v
	}
	if hasID {
		p.stamps.write(st)
	}
}

func (p *h2cProxy) sleepUntil(at int64) {
	t, _ := p.timers.Get().(*pace.Timer)
	if t == nil {
		var err error
		if t, err = pace.NewTimer(); err != nil {
			time.Sleep(time.Duration(at - clock.Now()))
			return
		}
	}
	if err := t.SleepUntil(at); err != nil {
		time.Sleep(time.Duration(at - clock.Now()))
	}
	p.timers.Put(t)
}
