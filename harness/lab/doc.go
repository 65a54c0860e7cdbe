// Package lab builds hopscope's single-machine "cluster": pods that are
// network namespaces with a veth into a shared bridge (addresses from the
// benchmarking range 198.18.0.0/15), processes started inside a pod's
// namespace each in its own cgroup, and the baseline and mesh topologies with
// real sidecar proxies (the reference proxy, haproxy, nginx, caddy, or any
// command from a template).
//
// Everything the lab makes is named after the lab (netns "<lab>-client",
// veth aliases "hopscope-pod:<netns>", cgroups "/hopscope*/<lab>/...", a
// state directory under /run/hopscope/lab), so Cleanup can find and remove
// it after a crash without touching anything else. The package must not
// measure anything: it builds and tears down; the probe, the sampler and the
// load generator watch and drive what it builds through target.Target.
package lab
