package clock

import (
	_ "unsafe" // for go:linkname
)

// nanotime is the runtime's monotonic clock. On Linux it is
// clock_gettime(CLOCK_MONOTONIC) through the vDSO: the same clock as
// bpf_ktime_get_ns(), at a fraction of a syscall's cost.
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64

// Now returns CLOCK_MONOTONIC in nanoseconds.
func Now() int64 { return nanotime() }
