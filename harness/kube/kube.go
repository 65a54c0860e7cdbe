package kube

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/hopscope/hopscope/harness/bench"
	"github.com/hopscope/hopscope/harness/load"
	"github.com/hopscope/hopscope/target"
)

// Meshes hopscope knows how to ask for injection.
const (
	MeshNone    = "none"
	MeshLinkerd = "linkerd"
	MeshIstio   = "istio"
)

// Labels and names of what the backend creates.
const (
	ManagedBy   = "app.kubernetes.io/managed-by"
	ManagerName = "hopscope-bench"
	RunLabel    = "hopscope.io/run"
	AppName     = "app"
	AppPort     = 8080
	// resultMarker separates the load generator's JSON result from its
	// hlog in the pod's log.
	resultMarker = "----- hopscope hlog -----"
)

// Config says how the backend deploys.
type Config struct {
	Mesh  string // none, linkerd or istio
	Image string // the hopscope image: app and load generator
	// Connections is the load generator's connection count (default 10).
	Connections int
	// ReadyTimeout bounds waiting for the app to be ready (default 3m).
	ReadyTimeout time.Duration
	// Poll is how often readiness and the load pod are checked (default 1s).
	Poll time.Duration
}

// Backend runs bench scenarios on a cluster.
type Backend struct {
	client kubernetes.Interface
	cfg    Config
	// Logs reads a pod's log (the load generator's output); the default
	// uses the pods/log subresource.
	Logs func(ctx context.Context, ns, pod string) ([]byte, error)
}

var _ bench.Backend = (*Backend)(nil)

// NewBackend checks cfg and returns a backend.
func NewBackend(client kubernetes.Interface, cfg Config) (*Backend, error) {
	switch cfg.Mesh {
	case MeshNone, MeshLinkerd, MeshIstio:
	case "":
		return nil, errors.New("--mesh: say which mesh the cluster runs: linkerd, istio or none")
	default:
		return nil, fmt.Errorf("--mesh %q: want linkerd, istio or none", cfg.Mesh)
	}
	if cfg.Image == "" {
		return nil, errors.New("--image: name the hopscope image the cluster can pull (it runs the app and the load generator)")
	}
	if cfg.Connections <= 0 {
		cfg.Connections = 10
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 3 * time.Minute
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	b := &Backend{client: client, cfg: cfg}
	b.Logs = func(ctx context.Context, ns, pod string) ([]byte, error) {
		rc, err := client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: "load"}).Stream(ctx)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	return b, nil
}

func (b *Backend) Name() string { return "kube" }

// Scenarios are the scenarios this backend runs: baseline, and the mesh.
func (b *Backend) Scenarios() []bench.Scenario {
	if b.cfg.Mesh == MeshNone {
		return nil
	}
	return []bench.Scenario{{Name: b.cfg.Mesh, Proxy: b.cfg.Mesh}}
}

func (b *Backend) Environment(ctx context.Context, env *bench.Environment) {
	if env.Notes == nil {
		env.Notes = map[string]string{}
	}
	env.Notes["mesh"] = b.cfg.Mesh
	env.Notes["image"] = b.cfg.Image
	if v, err := b.client.Discovery().ServerVersion(); err == nil {
		env.Notes["kubernetes"] = v.GitVersion
	}
	if nodes, err := b.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
		env.Notes["nodes"] = strconv.Itoa(len(nodes.Items))
		if len(nodes.Items) > 0 {
			env.Notes["node_kernel"] = nodes.Items[0].Status.NodeInfo.KernelVersion
			env.Notes["container_runtime"] = nodes.Items[0].Status.NodeInfo.ContainerRuntimeVersion
		}
	}
}

// Check: on a cluster the sidecar is the mesh's, so a scenario's proxy must
// be the mesh named by --mesh.
func (b *Backend) Check(s bench.Scenario) error {
	if s.IsBaseline() {
		return nil
	}
	if s.Template != "" || s.Proxy != b.cfg.Mesh || b.cfg.Mesh == MeshNone {
		return fmt.Errorf("scenario %s: on a cluster the proxy is the mesh's sidecar: run with --mesh linkerd or --mesh istio and no --proxy", s.Name)
	}
	return nil
}

// Cleanup deletes the namespaces a killed earlier experiment left.
func (b *Backend) Cleanup(ctx context.Context) error {
	nss, err := b.client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: ManagedBy + "=" + ManagerName})
	if err != nil {
		return fmt.Errorf("list leftover namespaces: %w", target.ExplainAPIError(err))
	}
	var errs []error
	for _, ns := range nss.Items {
		if err := b.deleteNamespace(ctx, ns.Name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (b *Backend) deleteNamespace(ctx context.Context, name string) error {
	fg := metav1.DeletePropagationForeground
	err := b.client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &fg})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete namespace %s: %w", name, err)
	}
	return nil
}

// injection returns the namespace's and the pods' annotations and labels
// that ask the mesh for (or against) a sidecar.
func injection(mesh string, meshed bool) (nsAnn, nsLabels, podAnn, podLabels map[string]string) {
	nsAnn, nsLabels, podAnn, podLabels = map[string]string{}, map[string]string{ManagedBy: ManagerName}, map[string]string{}, map[string]string{}
	switch {
	case meshed && mesh == MeshLinkerd:
		nsAnn["linkerd.io/inject"] = "enabled"
		podAnn["linkerd.io/inject"] = "enabled"
	case meshed && mesh == MeshIstio:
		nsLabels["istio-injection"] = "enabled"
		podAnn["sidecar.istio.io/inject"] = "true"
		podLabels["sidecar.istio.io/inject"] = "true"
	default: // baseline: make sure no namespace default injects one
		nsAnn["linkerd.io/inject"] = "disabled"
		podAnn["linkerd.io/inject"] = "disabled"
		podAnn["sidecar.istio.io/inject"] = "false"
		podLabels["sidecar.istio.io/inject"] = "false"
	}
	return
}

// Deployment is one scenario deployed in its own namespace.
type Deployment struct {
	b         *Backend
	Namespace string
	scenario  bench.Scenario
	podAnn    map[string]string
	podLabels map[string]string
	loads     int
}

var _ bench.Deployment = (*Deployment)(nil)

// Up makes the scenario's namespace and app and waits until the app is
// ready. On error it deletes what it made.
func (b *Backend) Up(ctx context.Context, s bench.Scenario) (bench.Deployment, error) {
	if err := b.Check(s); err != nil {
		return nil, err
	}
	suffix := make([]byte, 3)
	rand.Read(suffix)
	name := "hopscope-bench-" + s.Name + "-" + hex.EncodeToString(suffix)
	if s.IsBaseline() {
		name = "hopscope-bench-baseline-" + hex.EncodeToString(suffix)
	}
	nsAnn, nsLabels, podAnn, podLabels := injection(b.cfg.Mesh, !s.IsBaseline())
	d := &Deployment{b: b, Namespace: name, scenario: s, podAnn: podAnn, podLabels: podLabels}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: nsLabels, Annotations: nsAnn}}
	if _, err := b.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", name, target.ExplainAPIError(err))
	}
	if err := d.deployApp(ctx); err != nil {
		d.Down(context.WithoutCancel(ctx))
		return nil, err
	}
	return d, nil
}

func (d *Deployment) labels(app string) map[string]string {
	l := map[string]string{"app": app, ManagedBy: ManagerName}
	for k, v := range d.podLabels {
		l[k] = v
	}
	return l
}

func (d *Deployment) deployApp(ctx context.Context) error {
	c := d.b.client
	one := int32(1)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: AppName, Namespace: d.Namespace, Labels: map[string]string{ManagedBy: ManagerName}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": AppName}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: d.labels(AppName), Annotations: d.podAnn},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  AppName,
					Image: d.b.cfg.Image,
					Args:  []string{"app", "--listen", fmt.Sprintf(":%d", AppPort)},
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: AppPort}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
						TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(AppPort)}}},
				}}},
			},
		},
	}
	if _, err := c.AppsV1().Deployments(d.Namespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create the app: %w", target.ExplainAPIError(err))
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: AppName, Namespace: d.Namespace, Labels: map[string]string{ManagedBy: ManagerName}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": AppName},
			Ports: []corev1.ServicePort{{Name: "http", Port: AppPort, TargetPort: intstr.FromInt32(AppPort)}}},
	}
	if _, err := c.CoreV1().Services(d.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create the app's service: %w", target.ExplainAPIError(err))
	}
	return d.poll(ctx, d.b.cfg.ReadyTimeout, "the app to be ready", func() (bool, error) {
		got, err := c.AppsV1().Deployments(d.Namespace).Get(ctx, AppName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return got.Status.ReadyReplicas >= 1, nil
	})
}

func (d *Deployment) poll(ctx context.Context, timeout time.Duration, what string, done func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := done()
		if err != nil {
			return fmt.Errorf("waiting for %s in %s: %w", what, d.Namespace, target.ExplainAPIError(err))
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s in %s: not after %v (kubectl -n %s get pods,events)", what, d.Namespace, timeout, d.Namespace)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(d.b.cfg.Poll):
		}
	}
}

// Targets names the client (load generator) and server (app) pods; the
// agents find their netns and cgroups on their nodes.
func (d *Deployment) Targets() []target.Target {
	return []target.Target{
		{Name: "load", Namespace: d.Namespace, Role: target.Client},
		{Name: AppName, Namespace: d.Namespace, Role: target.Server, AppPort: AppPort},
	}
}

// Load runs the load generator as a pod, waits for it to finish, and reads
// its result and hlog from its log into spec.JSON and spec.Hlog. When ctx
// ends the pod is deleted (its SIGTERM makes the generator stop) and what
// it printed, if anything, is used.
func (d *Deployment) Load(ctx context.Context, spec bench.LoadSpec) (*load.Result, error) {
	c := d.b.client
	d.loads++
	name := fmt.Sprintf("load-%d-%d", spec.RateRPS, d.loads)
	url := fmt.Sprintf("http://%s.%s.svc:%d/", AppName, d.Namespace, AppPort)
	script := fmt.Sprintf("hopscope load --rate %d --duration %s --warmup %s --connections %d --json /tmp/result.json --hlog /tmp/client.hlog %s; rc=$?; cat /tmp/result.json; echo '%s'; cat /tmp/client.hlog; exit $rc",
		spec.RateRPS, spec.Duration, spec.Warmup, d.b.cfg.Connections, url, resultMarker)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: d.Namespace, Labels: d.labels("load"), Annotations: d.podAnn},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name:    "load",
				Image:   d.b.cfg.Image,
				Command: []string{"sh", "-c", script},
			}},
		},
	}
	if _, err := c.CoreV1().Pods(d.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create the load generator: %w", target.ExplainAPIError(err))
	}
	budget := spec.Warmup + spec.Duration + d.b.cfg.ReadyTimeout
	werr := d.poll(ctx, budget, "the load generator to finish", func() (bool, error) {
		p, err := c.CoreV1().Pods(d.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			return true, nil
		}
		// A meshed pod's sidecar (not a native one) keeps running after
		// the generator exits: its container's end is what counts.
		for _, st := range p.Status.ContainerStatuses {
			if st.Name == "load" && st.State.Terminated != nil {
				return true, nil
			}
		}
		return false, nil
	})
	if werr != nil {
		c.CoreV1().Pods(d.Namespace).Delete(context.WithoutCancel(ctx), name, metav1.DeleteOptions{})
		return nil, werr
	}
	out, err := d.b.Logs(context.WithoutCancel(ctx), d.Namespace, name)
	if err != nil {
		return nil, fmt.Errorf("read the load generator's log: %w", err)
	}
	return writeResult(out, spec)
}

// writeResult splits the generator's log into its JSON result and hlog.
func writeResult(out []byte, spec bench.LoadSpec) (*load.Result, error) {
	js, hlog, ok := bytes.Cut(out, []byte(resultMarker+"\n"))
	if !ok {
		return nil, fmt.Errorf("load generator's log has no result: %s", firstLine(out))
	}
	var r load.Result
	if err := json.Unmarshal(js, &r); err != nil {
		return nil, fmt.Errorf("load generator's result: %v: %s", err, firstLine(js))
	}
	if spec.JSON != "" {
		if err := os.WriteFile(spec.JSON, js, 0o644); err != nil {
			return nil, err
		}
	}
	if spec.Hlog != "" {
		if err := os.WriteFile(spec.Hlog, hlog, 0o644); err != nil {
			return nil, err
		}
	}
	return &r, nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// Down deletes the scenario's namespace, and with it everything in it.
func (d *Deployment) Down(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	return d.b.deleteNamespace(ctx, d.Namespace)
}
