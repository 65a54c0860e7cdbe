#!/bin/sh
# /init of the vmtest initramfs (busybox). Mounts what a node with pure
# cgroup v2 has, loads the modules run.sh packed, runs the test binaries
# listed in /etc/vmtest/tests.sh, prints one result line and powers off.
# Anything it cannot set up is a failed run, never a silent skip.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root TMPDIR=/tmp

setup_failed=0
must() { "$@" || { echo "vmtest-init: FAILED: $*"; setup_failed=1; }; }

must mount -t proc proc /proc
must mount -t sysfs sysfs /sys
must mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
stty -onlcr 2>/dev/null # no \r before each \n on the serial line
mkdir -p /dev/pts /dev/shm
must mount -t devpts devpts /dev/pts
must mount -t tmpfs -o mode=1777 tmpfs /dev/shm
must mount -t tmpfs -o mode=755 tmpfs /run
must mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /run/netns
# cgroup v2 alone (the kernel also has cgroup_no_v1=all), with the
# controllers a node's pods get.
must mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
must sh -c 'echo "+cpu +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control'
must mount -t bpf -o mode=700 bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
hostname hopscope-vm

up() { cut -d' ' -f1 /proc/uptime; }
t_mod=$(up)
for m in $(cat /etc/vmtest/modules); do # dependencies first
  must insmod "/lib/modules/$(uname -r)/$m.ko"
done
# Lets the kernel autoload the packed modules through busybox modprobe.
depmod 2>/dev/null || echo "vmtest-init: depmod failed: the kernel cannot autoload modules"
# busybox's ip is not iproute2 and is not on PATH; only lo is set up here.
must busybox ip link set lo up

. /etc/vmtest/env
echo "vmtest-init: up $(up)s (modules took from ${t_mod}s); kernel $(uname -r), cgroup controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control), modules: $(cat /etc/vmtest/modules | tr '\n' ' ')"
# Under emulation the TSC is unusable and the kernel falls back to hpet: say so.
echo "vmtest-init: clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"

failed=0
run_pkg() { # run_pkg IMPORT-PATH DIR BINARY ARGS...
  pkg=$1 dir=$2 bin=$3
  shift 3
  echo "vmtest-init: === $pkg: $bin $*"
  start=$(date +%s)
  (cd "$dir" && "$bin" "$@")
  rc=$?
  secs=$(( $(date +%s) - start ))
  if [ $rc -eq 0 ]; then
    echo "vmtest-init: ok   $pkg ${secs}s"
  else
    echo "vmtest-init: FAIL $pkg ${secs}s (exit $rc)"
    failed=$((failed + 1))
  fi
}
if [ $setup_failed -ne 0 ]; then
  echo "vmtest-init: the VM was not set up as intended (see FAILED lines above): not running tests"
  failed=1
else
  . /etc/vmtest/tests.sh
fi

if [ $failed -eq 0 ]; then
  echo "HOPSCOPE-VMTEST-RESULT: PASS rc=0"
else
  echo "HOPSCOPE-VMTEST-RESULT: FAIL rc=$failed"
fi
sync
poweroff -f
