package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/hopscope/hopscope/agent/nodetest"
	"github.com/hopscope/hopscope/target"
)

func TestListenPolicy(t *testing.T) {
	for _, c := range []struct {
		addr, token string
		ok          bool
	}{
		{"127.0.0.1:9464", "", true},
		{"[::1]:9464", "", true},
		{"localhost:9464", "", true},
		{"127.0.0.2:9464", "", false}, // loopback, but not the default: policy
		{"0.0.0.0:9464", "", false},
		{":9464", "", false},
		{"10.1.2.3:9464", "", false},
		{"0.0.0.0:9464", "t", true},
		{"nonsense", "t", false},
	} {
		_, err := New(Config{Addr: c.addr, Token: c.token}, nil, nil)
		if (err == nil) != c.ok {
			t.Errorf("New(%q, token %q) = %v, want ok=%v", c.addr, c.token, err, c.ok)
		}
	}
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte(" \n"), 0o600)
	if _, err := ReadToken(empty); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty token file: %v", err)
	}
	good := filepath.Join(dir, "token")
	os.WriteFile(good, []byte("abc\n"), 0o600)
	if tok, err := ReadToken(good); err != nil || tok != "abc" {
		t.Errorf("token file: %q %v", tok, err)
	}
}

// TestHealthSaysWhatIsWrong: a kubeconfig that does not parse, an API server
// that is unreachable or forbids listing pods: /healthz says so, in words,
// while /metrics and the API keep answering; and it clears on recovery.
func TestHealthSaysWhatIsWrong(t *testing.T) {
	serve := func(t *testing.T, a *Agent) string {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go a.ServeListener(ctx, ln)
		return "http://" + ln.Addr().String()
	}
	health := func(t *testing.T, base string) (int, Health) {
		var h Health
		code := getJSON(t, base+"/healthz", "", &h)
		return code, h
	}

	t.Run("kubeconfig", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "kubeconfig")
		os.WriteFile(bad, []byte("clusters: [oops: {"), 0o600)
		_, err := target.KubeConn{Kubeconfig: bad}.Client()
		if err == nil {
			t.Fatal("bad kubeconfig accepted")
		}
		a, _ := New(Config{}, nil, nil)
		a.Problem("kubeconfig", err)
		base := serve(t, a)
		code, h := health(t, base)
		all := strings.Join(h.Problems, "\n")
		if code != http.StatusServiceUnavailable || !strings.Contains(all, "kubeconfig: kubeconfig "+bad+" does not load") ||
			!strings.Contains(all, "probe not running") {
			t.Errorf("/healthz %d: %s", code, all)
		}
		if code := getJSON(t, base+"/metrics", "", nil); code != http.StatusOK {
			t.Errorf("/metrics: %d", code)
		}
	})

	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"forbidden", apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New(`User "system:serviceaccount:hopscope:hopscope-agent" cannot list resource "pods" in API group "" at the cluster scope`)),
			"RBAC forbids watching pods: the agent's ServiceAccount needs get, list, watch on pods"},
		{"unreachable", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}, "API server unreachable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			client := fake.NewClientset()
			heal := nodetest.FailPods(client, c.err)
			a, _ := New(Config{Token: testToken}, nil, nil)
			base := serve(t, a)
			opts := target.KubeOptions{NodeName: "n1", ProcRoot: t.TempDir()}
			w, _ := target.NewWatcher(client, opts, target.NewResolver(opts))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go a.Watch(ctx, w)
			waitHealth(t, base, c.want, true)
			if code := getJSON(t, base+"/metrics", testToken, nil); code != http.StatusOK {
				t.Errorf("/metrics while the API fails: %d", code)
			}
			heal()
			waitHealth(t, base, "kubernetes:", false)
		})
	}
}

// waitHealth waits until /healthz does (present) or does not mention s.
func waitHealth(t *testing.T, base, s string, present bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var h Health
		getJSON(t, base+"/healthz", "", &h)
		all := strings.Join(h.Problems, "\n")
		if strings.Contains(all, s) == present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz problems %q: want %q present=%v", all, s, present)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
