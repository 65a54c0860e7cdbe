package agent

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// DefaultAddr is where the agent listens unless told otherwise: loopback,
// where no token is needed.
const DefaultAddr = "127.0.0.1:9464"

// TokenHeader carries the token where Authorization cannot: the API
// server's pod proxy consumes the caller's Authorization header.
const TokenHeader = "X-Hopscope-Token"

// Config says how the agent serves.
type Config struct {
	// Addr is the listen address (DefaultAddr when empty).
	Addr string
	// Token is the bearer token requests must carry. Required when Addr is
	// not 127.0.0.1, ::1 or localhost; when set it is required everywhere.
	Token string
	// Logf receives one line per notable event; nil is quiet.
	Logf func(format string, args ...any)
}

// ReadToken reads a token file (a Secret mounted as a file): its content,
// whitespace trimmed, must not be empty.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty: put the bearer token in it", path)
	}
	return tok, nil
}

// Loopback reports whether addr's host is one the agent serves without a
// token: exactly 127.0.0.1, ::1 or localhost. Other loopback addresses
// (127.0.0.2) count as non-default on purpose: the policy is about the
// address a user chose, not about routing.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	return host == "127.0.0.1" || host == "::1" || host == "localhost"
}

func (c *Config) check() error {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("listen address %q: want host:port (e.g. %s)", c.Addr, DefaultAddr)
	}
	if !Loopback(c.Addr) && c.Token == "" {
		return fmt.Errorf("listening on %s, beyond 127.0.0.1, needs a bearer token: pass --token-file (a file mounted from a Secret) or listen on %s", c.Addr, DefaultAddr)
	}
	return nil
}

// Handler serves /metrics, /healthz, /livez and the JSON API under /api/v1/.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metricsHandler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		h := a.Health()
		code := http.StatusOK
		if !h.OK {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, h)
	})
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /api/v1/pods", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, a.Pods()) })
	mux.HandleFunc("POST /api/v1/windows/{name}/start", func(w http.ResponseWriter, r *http.Request) {
		win, err := a.windows.start(r.PathValue("name"))
		reply(w, win, err)
	})
	mux.HandleFunc("POST /api/v1/windows/{name}/stop", func(w http.ResponseWriter, r *http.Request) {
		win, err := a.windows.stop(r.PathValue("name"))
		reply(w, win, err)
	})
	mux.HandleFunc("GET /api/v1/windows/{name}", func(w http.ResponseWriter, r *http.Request) {
		win, err := a.windows.get(r.PathValue("name"))
		reply(w, win, err)
	})
	return a.authorize(mux)
}

// authorize requires the token, when there is one, on everything but the
// liveness and health probes the kubelet sends without credentials.
func (a *Agent) authorize(next http.Handler) http.Handler {
	if a.cfg.Token == "" {
		return next
	}
	want := []byte(a.cfg.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/livez" || r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		got := r.Header.Get(TokenHeader)
		if auth := r.Header.Get("Authorization"); strings.HasPrefix(auth, "Bearer ") {
			got = strings.TrimPrefix(auth, "Bearer ")
		}
		if got == "" || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="hopscope-agent"`)
			http.Error(w, "missing or wrong bearer token: send Authorization: Bearer <token from the agent's Secret>", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Serve listens on Config.Addr and serves until ctx ends.
func (a *Agent) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", a.cfg.Addr, err)
	}
	return a.ServeListener(ctx, ln)
}

// ServeListener serves on ln until ctx ends.
func (a *Agent) ServeListener(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	a.logf("serving on %s (token required: %v)", ln.Addr(), a.cfg.Token != "")
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func reply(w http.ResponseWriter, v any, err error) {
	var ae apiError
	switch {
	case errors.As(err, &ae):
		writeJSON(w, ae.code, map[string]string{"error": ae.msg})
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
	default:
		writeJSON(w, http.StatusOK, v)
	}
}

type apiError struct {
	code int
	msg  string
}

func (e apiError) Error() string { return e.msg }
