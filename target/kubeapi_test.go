package target

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// apiServer stands in for kube-apiserver's pod list and watch, over HTTP,
// for the real client: kubeconfig loading, selectors on the wire, Status
// errors and dial errors as they really arrive.
type apiServer struct {
	mu        sync.Mutex
	forbidden bool
	queries   []string
}

func (s *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	forbidden := s.forbidden
	s.queries = append(s.queries, r.URL.RawQuery)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.URL.Path != "/api/v1/pods" {
		http.NotFound(w, r)
		return
	}
	if forbidden {
		w.WriteHeader(http.StatusForbidden)
		json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Failure",
			Reason: metav1.StatusReasonForbidden, Code: 403,
			Message: `pods is forbidden: User "system:serviceaccount:hopscope:hopscope-agent" cannot list resource "pods" in API group "" at the cluster scope`})
		return
	}
	q := r.URL.Query()
	if q.Get("watch") == "true" || q.Get("watch") == "1" {
		if q.Get("sendInitialEvents") == "true" { // no WatchList here: the client falls back to list
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Failure",
				Reason: metav1.StatusReasonBadRequest, Code: 400, Message: "sendInitialEvents unsupported"})
			return
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done() // an idle watch
		return
	}
	pod := sidecarPod("shop", "web", "n1", map[string]string{"app": "web"})
	pod.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
	json.NewEncoder(w).Encode(corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"},
		ListMeta: metav1.ListMeta{ResourceVersion: "10"}, Items: []corev1.Pod{*pod}})
}

func kubeconfig(t *testing.T, server string) string {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: a, context: {cluster: c, user: u}}]
current-context: a
`, server)), 0o600)
	return path
}

func watchStatus(t *testing.T, opts KubeOptions) (*Watcher, *events, context.CancelFunc) {
	client, err := opts.Client()
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWatcher(client, opts, NewResolver(opts))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ev := &events{}
	go w.Run(ctx, ev.add)
	return w, ev, cancel
}

func waitAPI(t *testing.T, w *Watcher, ok func(bool, error) bool) error {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		synced, err := w.APIStatus()
		if ok(synced, err) {
			return err
		}
		if time.Now().After(deadline) {
			t.Fatalf("APIStatus = %v, %v", synced, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWatcherRealClient(t *testing.T) {
	s := &apiServer{}
	srv := httptest.NewServer(s)
	defer srv.Close()
	opts := KubeOptions{KubeConn: KubeConn{Kubeconfig: kubeconfig(t, srv.URL)}, NodeName: "n1", Selector: "app=web", ProcRoot: t.TempDir()}

	w, ev, cancel := watchStatus(t, opts)
	ev.wait(t, "shop/web", func(g []PodEvent) bool { return has(g, "shop/web", false) })
	waitAPI(t, w, func(synced bool, err error) bool { return synced && err == nil })
	cancel()
	s.mu.Lock()
	q := strings.Join(s.queries, "\n")
	s.mu.Unlock()
	if !strings.Contains(q, "fieldSelector=spec.nodeName%3Dn1") || !strings.Contains(q, "labelSelector=app%3Dweb") {
		t.Errorf("selectors not sent to the API server; queries:\n%s", q)
	}

	s.mu.Lock()
	s.forbidden = true
	s.mu.Unlock()
	w, _, cancel = watchStatus(t, opts)
	defer cancel()
	err := waitAPI(t, w, func(_ bool, err error) bool { return err != nil })
	if !strings.Contains(err.Error(), "RBAC forbids watching pods") || !strings.Contains(err.Error(), "deploy/rbac.yaml") {
		t.Errorf("forbidden: %v", err)
	}
}

func TestWatcherUnreachable(t *testing.T) {
	ln := httptest.NewServer(http.NotFoundHandler())
	addr := ln.URL
	ln.Close() // nothing listens there now
	opts := KubeOptions{KubeConn: KubeConn{Kubeconfig: kubeconfig(t, addr)}, NodeName: "n1", ProcRoot: t.TempDir()}
	w, _, cancel := watchStatus(t, opts)
	defer cancel()
	err := waitAPI(t, w, func(_ bool, err error) bool { return err != nil })
	if !strings.Contains(err.Error(), "API server unreachable") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("unreachable: %v", err)
	}
}
