package bpf

// Fixed flags so that `make generate` gives the same objects anywhere:
// -mcpu=v3 (kernel >= 5.1, well below the ring buffer's 5.8), no host
// includes beyond libbpf's headers, DWARF stripped by bpf2go, paths relative.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -strip llvm-strip -target bpfel -type counters -cflags "-O2 -g -Wall -Werror -mcpu=v3" Probe probe.c
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -strip llvm-strip -target bpfel -cflags "-O2 -g -Wall -Werror -mcpu=v3" Minimal minimal.c
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -strip llvm-strip -target bpfel -cflags "-O2 -g -Wall -Werror -mcpu=v3" Cgstat cgstat.c
