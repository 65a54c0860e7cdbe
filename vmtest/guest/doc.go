// Package guest checks the machine that `make vmtest` boots before anything
// else is judged on it: Debian 12's 6.1 kernel, cgroup v2 mounted alone with
// the cpu and memory controllers (memory.peak present), BPF ring buffers,
// clsact with cls_bpf, veth and bridge working, and TCX absent. A probe or
// sampler test that fails in the VM can then be told apart from a VM that
// was built wrong. Its tests that describe the VM run only where
// HOPSCOPE_VM=1 (inside it) and skip with that reason on any other host; the
// clsact, veth and ring-buffer checks run on any Linux host as root. It holds
// tests only: it must not be imported.
package guest
