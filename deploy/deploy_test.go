package deploy

import (
	"regexp"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

func TestManifestsDecodeAndGrantOnlyWhatIsNeeded(t *testing.T) {
	objs, err := Objects()
	if err != nil {
		t.Fatal(err)
	}
	var (
		ns      *corev1.Namespace
		sa      *corev1.ServiceAccount
		role    *rbacv1.ClusterRole
		binding *rbacv1.ClusterRoleBinding
		ds      *appsv1.DaemonSet
	)
	for _, o := range objs {
		switch v := o.(type) {
		case *corev1.Namespace:
			ns = v
		case *corev1.ServiceAccount:
			sa = v
		case *rbacv1.ClusterRole:
			role = v
		case *rbacv1.ClusterRoleBinding:
			binding = v
		case *appsv1.DaemonSet:
			ds = v
		default:
			t.Errorf("unexpected object %T", o)
		}
	}
	if ns == nil || sa == nil || role == nil || binding == nil || ds == nil {
		t.Fatalf("missing objects: ns %v sa %v role %v binding %v ds %v", ns != nil, sa != nil, role != nil, binding != nil, ds != nil)
	}
	if sa.Namespace != ns.Name || ds.Namespace != ns.Name {
		t.Errorf("namespaces: sa %q ds %q, want %q", sa.Namespace, ds.Namespace, ns.Name)
	}

	// RBAC: get, list, watch on pods and nodes, nothing else.
	for _, r := range role.Rules {
		if strings.Join(r.APIGroups, ",") != "" || len(r.NonResourceURLs) > 0 || len(r.ResourceNames) > 0 {
			t.Errorf("rule beyond the core group: %+v", r)
		}
		for _, res := range r.Resources {
			if res != "pods" && res != "nodes" {
				t.Errorf("role grants %q", res)
			}
		}
		v := append([]string(nil), r.Verbs...)
		sort.Strings(v)
		if strings.Join(v, ",") != "get,list,watch" {
			t.Errorf("role verbs %v, want get, list, watch", r.Verbs)
		}
	}
	if binding.RoleRef.Name != role.Name || binding.RoleRef.Kind != "ClusterRole" || len(binding.Subjects) != 1 ||
		binding.Subjects[0].Name != sa.Name || binding.Subjects[0].Namespace != sa.Namespace {
		t.Errorf("binding %+v does not bind %s to %s/%s", binding, role.Name, sa.Namespace, sa.Name)
	}

	// The DaemonSet.
	spec := ds.Spec.Template.Spec
	if spec.ServiceAccountName != sa.Name || !spec.HostPID || !spec.HostNetwork {
		t.Errorf("pod spec: sa %q hostPID %v hostNetwork %v", spec.ServiceAccountName, spec.HostPID, spec.HostNetwork)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%d containers", len(spec.Containers))
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.Capabilities == nil {
		t.Fatalf("securityContext %+v: want privileged false and named capabilities", sc)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("root filesystem not read-only")
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation false with CAP_SYS_ADMIN: the API server rejects it")
	}
	if len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("drop %v, want ALL", sc.Capabilities.Drop)
	}
	var caps []string
	for _, c := range sc.Capabilities.Add {
		caps = append(caps, string(c))
	}
	sort.Strings(caps)
	if strings.Join(caps, ",") != "BPF,NET_ADMIN,PERFMON,SYS_ADMIN,SYS_PTRACE" {
		t.Errorf("capabilities %v", caps)
	}
	// Each capability says why, in a comment on its line.
	raw, _ := Raw("daemonset.yaml")
	for _, cp := range caps {
		if !regexp.MustCompile(`(?m)^\s*- ` + cp + ` # \S+`).Match(raw) {
			t.Errorf("capability %s has no comment saying why", cp)
		}
	}
	// Read-only host mounts of /proc and /sys/fs/cgroup.
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	host := map[string]bool{}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			t.Errorf("mount %s is writable", m.MountPath)
		}
		if hp := vols[m.Name].HostPath; hp != nil {
			host[hp.Path] = true
		}
	}
	if !host["/proc"] || !host["/sys/fs/cgroup"] || len(host) != 2 {
		t.Errorf("host mounts %v, want /proc and /sys/fs/cgroup only", host)
	}
	// NODE_NAME from the downward API; the token from the Secret's mount.
	var node bool
	for _, e := range c.Env {
		if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
			node = true
		}
	}
	if !node {
		t.Error("NODE_NAME is not spec.nodeName from the downward API")
	}
	args := strings.Join(c.Args, " ")
	if !strings.Contains(args, "--token-file=/var/run/secrets/hopscope/token") || !strings.Contains(args, "--listen=0.0.0.0:9464") ||
		!strings.Contains(args, "--proc=/host/proc") {
		t.Errorf("args %q", args)
	}
	if s := vols["token"].Secret; s == nil || s.SecretName == "" {
		t.Error("the token is not mounted from a Secret")
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/healthz" {
		t.Error("readiness is not /healthz")
	}
}
