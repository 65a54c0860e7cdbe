package target

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// PodEvent says a pod on the node appeared, changed or went away.
type PodEvent struct {
	Deleted bool
	UID     types.UID
	Pod     string // namespace/name
	Target  Target // the resolved target (empty when Deleted)
}

// Watcher watches the pods of one node through a client-go informer and
// turns them into targets. It records the API server's health (unreachable,
// forbidden) instead of failing: the informer keeps retrying with backoff.
type Watcher struct {
	client   kubernetes.Interface
	opts     KubeOptions
	selector labels.Selector
	resolver *Resolver
	// Resync re-delivers every pod this often, so that pods whose
	// containers had no process yet are resolved again.
	Resync time.Duration

	mu      sync.Mutex
	apiErr  error
	synced  func() bool
	watched map[types.UID]resolved
}

// resolved is what a pod resolved to, at which version of the pod.
type resolved struct {
	version string
	target  Target
}

// NewWatcher returns a watcher for the options (see KubeOptions.Check).
func NewWatcher(client kubernetes.Interface, opts KubeOptions, r *Resolver) (*Watcher, error) {
	if err := opts.Check(); err != nil {
		return nil, err
	}
	sel, _ := labels.Parse(opts.Selector)
	return &Watcher{client: client, opts: opts, selector: sel, resolver: r, Resync: 10 * time.Second, watched: map[types.UID]resolved{}}, nil
}

// APIStatus reports whether the pod list has been received at least once,
// and the last error talking to the API server (nil once a call succeeds).
func (w *Watcher) APIStatus() (synced bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.synced != nil && w.synced(), w.apiErr
}

func (w *Watcher) record(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.apiErr = ExplainAPIError(err)
	} else {
		w.apiErr = nil
	}
}

// ExplainAPIError says what an API error means for the agent and what to do.
func ExplainAPIError(err error) error {
	var netErr net.Error
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("RBAC forbids watching pods: the agent's ServiceAccount needs get, list, watch on pods (apply deploy/rbac.yaml): %w", err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("API server rejected the agent's credentials (expired token or wrong kubeconfig user): %w", err)
	case errors.As(err, &netErr), apierrors.IsServerTimeout(err), apierrors.IsTimeout(err), apierrors.IsServiceUnavailable(err), apierrors.IsInternalError(err):
		return fmt.Errorf("API server unreachable (retrying): %w", err)
	default:
		return fmt.Errorf("API server: %w (retrying)", err)
	}
}

// Run watches until ctx ends, calling handle for each change, one at a time.
func (w *Watcher) Run(ctx context.Context, handle func(PodEvent)) {
	tweak := func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", w.opts.NodeName).String()
		o.LabelSelector = w.opts.Selector
	}
	pods := w.client.CoreV1().Pods(w.opts.Namespace)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			tweak(&o)
			l, err := pods.List(ctx, o)
			w.record(err)
			return l, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			tweak(&o)
			wi, err := pods.Watch(ctx, o)
			w.record(err)
			return wi, err
		},
	}
	var mu sync.Mutex // handlers run on one goroutine, but be explicit
	deliver := func(obj any, deleted bool) {
		mu.Lock()
		defer mu.Unlock()
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		key := pod.Namespace + "/" + pod.Name
		// The API server applies the selectors; filter again so that a
		// server (or fake) that ignores field selectors cannot widen the set.
		if !deleted && !w.matches(pod) {
			deleted = true
		}
		w.mu.Lock()
		prev, was := w.watched[pod.UID]
		w.mu.Unlock()
		var t Target
		if !deleted {
			if was && prev.version == pod.ResourceVersion && prev.target.Unattributable == "" && w.resolver.alive(prev.target) {
				// A resync of an unchanged pod whose proxy still runs:
				// spare the /proc scan.
				t = prev.target
			} else {
				var watch bool
				t, watch = w.resolver.Resolve(pod)
				deleted = !watch
			}
		}
		w.mu.Lock()
		if deleted {
			delete(w.watched, pod.UID)
		} else {
			w.watched[pod.UID] = resolved{version: pod.ResourceVersion, target: t}
		}
		w.mu.Unlock()
		if deleted && !was {
			return
		}
		handle(PodEvent{Deleted: deleted, UID: pod.UID, Pod: key, Target: t})
	}
	_, ctl := cache.NewInformerWithOptions(cache.InformerOptions{
		// The client decides whether it can stream the initial list
		// (WatchList); fakes cannot, and say so.
		ListerWatcher: cache.ToListWatcherWithWatchListSemantics(lw, w.client),
		ObjectType:    &corev1.Pod{},
		ResyncPeriod:  w.Resync,
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { deliver(obj, false) },
			UpdateFunc: func(_, obj any) { deliver(obj, false) },
			DeleteFunc: func(obj any) { deliver(obj, true) },
		},
	})
	w.mu.Lock()
	w.synced = ctl.HasSynced
	w.mu.Unlock()
	ctl.RunWithContext(ctx)
}

func (w *Watcher) matches(pod *corev1.Pod) bool {
	if pod.Spec.NodeName != w.opts.NodeName {
		return false
	}
	if w.opts.Namespace != "" && pod.Namespace != w.opts.Namespace {
		return false
	}
	return w.selector.Matches(labels.Set(pod.Labels))
}
