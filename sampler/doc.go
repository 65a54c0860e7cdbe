// Package sampler measures what a process group costs: the CPU time and
// memory of each watched cgroup (a sidecar proxy, an app), read from the
// kernel's cgroup files while a run goes on. It reads cgroup v2 where the
// figure is there and v1 where it is not (hybrid hosts keep memory on v1),
// and falls back to /proc/PID for a target without a cgroup of its own.
// Every figure names the file it came from; the exact kernel-kept memory
// peak (memory.peak, memory.max_usage_in_bytes) is preferred to the maximum
// of the samples, and a figure that cannot be read is marked absent with the
// reason, never reported as 0.
//
// It also makes and removes the cgroups hopscope runs its proxies in
// (MakeCgroup, RemoveCgroup), with the same relative path in every hierarchy.
//
// It must not change what it measures beyond the documented per-run peak
// resets (memory.peak per open file, memory.max_usage_in_bytes, clear_refs),
// must not set limits, and must not read more than its cost budget allows
// (100 cgroups at 10 Hz within 1% of one core).
package sampler
