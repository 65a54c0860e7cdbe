package probe

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// ErrPrivileges is returned when the process may not load BPF programs or
// change qdiscs.
var ErrPrivileges = errors.New("needs root (CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, or CAP_SYS_ADMIN): run with sudo")

// checkPrivileges tests the effective capabilities up front, so a user gets
// one line naming what is missing instead of an EPERM from deep inside.
func checkPrivileges() error {
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) && has(unix.CAP_NET_ADMIN) {
		return nil
	}
	if has(unix.CAP_BPF) && has(unix.CAP_PERFMON) && has(unix.CAP_NET_ADMIN) {
		return nil
	}
	return ErrPrivileges
}

// checkKernel says which kernel feature is missing and what hopscope does
// about it. Ring buffers (5.8) are required; BTF is only reported (the
// program reads no kernel structs, so it loads without CO-RE); TCX is
// probed later by a test attach, with clsact as the fallback.
func checkKernel() error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("raise memlock limit: %w", err)
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("kernel lacks BPF ring buffers (needs >= 5.8): %w", err)
		}
		if errors.Is(err, os.ErrPermission) {
			return ErrPrivileges
		}
		return fmt.Errorf("probe ring buffer support: %w", err)
	}
	if err := features.HaveProgramType(ebpf.SchedCLS); err != nil {
		return fmt.Errorf("kernel lacks TC BPF programs (sched_cls): %w", err)
	}
	return nil
}

// KernelReport describes the kernel features the probe uses, one line
// each, for `hopscope probe --check` and logs.
func KernelReport() []string {
	var out []string
	if _, err := btf.LoadKernelSpec(); err != nil {
		out = append(out, fmt.Sprintf("BTF: missing (%v): not needed, the classifier uses no CO-RE relocations", err))
	} else {
		out = append(out, "BTF: present")
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		out = append(out, fmt.Sprintf("ring buffer: missing (%v): the probe cannot run (needs >= 5.8)", err))
	} else {
		out = append(out, "ring buffer: present")
	}
	return out
}

func mapErr(err error) error {
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("%w (%v)", ErrPrivileges, err)
	}
	return err
}
