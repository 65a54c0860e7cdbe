// Package clock reads CLOCK_MONOTONIC, the one clock every hopscope timestamp
// uses: bpf_ktime_get_ns() in the probe, and the load generator, the test app
// and the reference proxy in user space. Timestamps from these sources can be
// subtracted from one another on one node. It must not be used for wall-clock
// time or across nodes.
package clock
