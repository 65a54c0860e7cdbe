// Package target says what hopscope watches: a pod-like unit with its network
// namespace, its interfaces (the pod-side device and lo), the cgroups of its
// proxy and app, and the ports that tell the proxy's traffic from the app's.
// Targets come from the lab, from Kubernetes (client-go and /proc on the
// node) or from flags. This package finds and describes targets; it must not
// attach probes or read cgroup statistics, which are the probe's and the
// sampler's jobs.
package target
