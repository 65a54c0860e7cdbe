// Package bpf holds hopscope's BPF programs: their C sources, the shared
// header, and the Go bindings and objects bpf2go generated from them
// (committed, so that building hopscope needs no clang). hopscope_tc is the
// probe's TC classifier (see probe.c for the record it emits and the kernel
// it needs); minimal_tc is only a cost floor for benchmarks; cgstat_iter is
// the sampler's cgroup iterator (cgstat.c), which reads every watched
// cgroup's CPU usage and memory in one pass. This package
// loads nothing by itself and must not grow Go logic: packages probe and
// sampler load, configure and attach these objects.
package bpf
