// Package agent is hopscope's node agent: it takes the pods that Kubernetes
// discovery (package target) finds on its node, attaches the probe to each
// one's interfaces and adds its proxy and app cgroups to the sampler, keeps
// a registry per pod so that pods coming and going during a run are attached
// and detached live, and serves what they measure: Prometheus metrics on
// /metrics, a JSON API that marks run windows and returns each window's hop
// histograms and resources, and /healthz, which says what is wrong
// (kubeconfig, API server, RBAC, pods without a process yet) while the rest
// keeps serving.
//
// It must not find pods itself (that is package target), load BPF or read
// cgroup files (probe, sampler), or serve anything but read access to its
// measurements beyond a loopback address without a bearer token.
package agent
