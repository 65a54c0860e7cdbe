#!/usr/bin/env bash
# make vmtest: runs hopscope's kernel-facing tests on another kernel, Debian
# 12's 6.1 (no TCX; cgroup v2 mounted alone), under qemu with software
# emulation; with VMTEST_KERNEL_SUITE=bookworm-backports, that suite's 6.12
# (make vmtest runs both). The 6.1 kernel comes from Debian's
# linux-image-6.1.0-NN-amd64 package through apt; kernels are cached in
# vmtest/cache/; the initramfs holds
# busybox, the modules below and statically built test binaries; the VM's
# serial console is printed and kept in vmtest/cache/console.log. Exit
# status: 0 when every test binary passed inside the VM, non-zero with a
# message that says why otherwise (a failed test, a kernel panic, a VM that
# did not finish in time, no qemu, no kernel package). The first kernel
# fetched stays in use; rm -rf vmtest/cache takes the newest one again.
#
# Knobs (environment):
#   VMTEST_TIMEOUT=600      seconds the VM may run before it is killed
#   VMTEST_MEM=1536 VMTEST_SMP=2
#   VMTEST_KERNEL_PKG=linux-image-6.1.0-NN-amd64   pin a kernel package
#   VMTEST_KERNEL_SUITE=bookworm-backports   boot that suite's newest
#                            linux-image-6.*+deb12-amd64-unsigned instead (6.12:
#                            TCX, per-open-file memory.peak), fetched from the
#                            archive and checked against its signed index
#   VMTEST_MIRROR=http://deb.debian.org/debian   where the suite is fetched
#   VMTEST_PACKAGES='./sampler|TestPeak|60s'       run these instead (lines)
#   VMTEST_APPEND='...'      more kernel command line
#   VMTEST_CACHE=DIR         where the kernel and the work files go (vmtest/cache)
#   VMTEST_QEMU=PATH VMTEST_CPU=max
#   VMTEST_SELFTEST=fail    add a deliberately failing test: must exit non-zero
#   VMTEST_SELFTEST=hang    make the guest hang: must end with the timeout message
#   VMTEST_SELFTEST=panic   make the guest's init die: must end with "kernel panic"
set -eu -o pipefail

# The packages whose tests run in the VM, one per line:
#   directory | -test.run filter (empty: all) | -test.timeout
# A package is included only when it exists and has tests. Emulation is
# slow (TCG): keep these to the tests that need this kernel.
PACKAGES='
./vmtest/guest||60s
./spawn||60s
./probe||240s
./sampler||180s
'
# Kernel modules to load, dependencies are added (and loaded first).
# hopscope opens netlink handles for NETLINK_ROUTE only; a handle with no
# families would also open XFRM and netfilter sockets and need xfrm_user and
# nfnetlink loaded.
MODULES='veth bridge sch_ingress cls_bpf act_bpf'
# The kernel command line: serial console, a panic ends the VM at once
# (with -no-reboot), and cgroup v1 is switched off entirely.
APPEND='console=ttyS0 panic=-1 oops=panic loglevel=4 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 rdinit=/init'

PACKAGES=${VMTEST_PACKAGES:-$PACKAGES} # e.g. VMTEST_PACKAGES='./sampler|TestVM|60s'
timeout_s=${VMTEST_TIMEOUT:-600}
APPEND="$APPEND ${VMTEST_APPEND:-}"
mem=${VMTEST_MEM:-1536}
smp=${VMTEST_SMP:-2}
selftest=${VMTEST_SELFTEST:-}

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cache=${VMTEST_CACHE:-$here/cache}
export PATH=$PATH:/usr/local/go/bin
t0=$(date +%s)

say() { echo "vmtest: $*"; }
die() { echo "vmtest: $*" >&2; exit 1; }

case "$selftest" in
  ''|fail|hang|panic) ;;
  *) die "VMTEST_SELFTEST=$selftest: want fail, hang or panic (or unset)" ;;
esac

# --- what the host needs ---------------------------------------------------
qemu=${VMTEST_QEMU:-qemu-system-x86_64}
command -v "$qemu" >/dev/null ||
  die "$qemu not found: install Debian's qemu-system-x86 (scripts/setup.sh vmtest does)"
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || die "busybox not found: install Debian's busybox-static (scripts/setup.sh vmtest does)"
if head -c 1024 "$busybox" | grep -qa 'ld-linux'; then # a dynamic ELF names its loader (.interp) up front
  die "$busybox is dynamically linked: the initramfs needs Debian's busybox-static"
fi
command -v cpio >/dev/null || die "cpio not found: install Debian's cpio (scripts/setup.sh vmtest does)"
command -v go >/dev/null || die "go not found (looked in PATH and /usr/local/go/bin)"

# --- the kernel ------------------------------------------------------------
newest_kernel_pkg() {
  apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' 2>/dev/null |
    awk '{print $1}' | sort -V | tail -n 1
}

# fetch_kernel sets kdir to an extracted kernel package: boot/vmlinuz-* and
# the network modules. Uses the cache when it has one; asks apt otherwise.
fetch_kernel() {
  local pkg=${VMTEST_KERNEL_PKG:-}
  mkdir -p "$cache/kernel"
  if [ -z "$pkg" ] && [ -f "$cache/kernel/current" ]; then
    pkg=$(cat "$cache/kernel/current")
  fi
  if [ -n "$pkg" ] && [ -f "$cache/kernel/$pkg/complete" ]; then
    kdir=$cache/kernel/$pkg kpkg=$pkg
    say "kernel: $pkg (cached)"
    return
  fi
  if [ -z "$pkg" ]; then
    command -v apt-cache >/dev/null ||
      die "no kernel package reachable: vmtest takes Debian 12's linux-image-6.1.0-NN-amd64 through apt, and there is no apt-cache here"
    pkg=$(newest_kernel_pkg)
    if [ -z "$pkg" ]; then
      say "apt lists no linux-image-6.1.0-NN-amd64 yet: running apt-get update"
      apt-get update -qq >/dev/null 2>&1 || say "apt-get update failed"
      pkg=$(newest_kernel_pkg)
    fi
    [ -n "$pkg" ] ||
      die "no kernel package reachable: apt-cache lists no linux-image-6.1.0-NN-amd64 (needs Debian 12 bookworm in apt's sources and a reachable mirror)"
  fi
  local dl=$cache/kernel/download
  rm -rf "$dl" && mkdir -p "$dl"
  id _apt >/dev/null 2>&1 && chown _apt "$dl" # apt downloads as _apt
  say "kernel: downloading $pkg with apt-get download"
  (cd "$dl" && apt-get download -q "$pkg" >/dev/null 2>"$dl.err") || {
    cat "$dl.err" >&2
    die "no kernel package reachable: apt-get download $pkg failed (see above)"
  }
  local deb
  deb=$(ls "$dl"/*.deb)
  extract_kernel "$deb" "$pkg"
  rm -rf "$dl" "$dl.err"
  echo "$pkg" >"$cache/kernel/current"
}

# extract_kernel DEB PKG: unpack the kernel and the network modules of a
# kernel package into the cache; sets kdir and kpkg.
extract_kernel() {
  local deb=$1 pkg=$2
  local dir=$cache/kernel/$pkg
  rm -rf "$dir" && mkdir -p "$dir"
  # Only the kernel and the network modules: the whole tree is 400 MB.
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir" --wildcards \
    '*/boot/vmlinuz-*' '*/boot/config-*' '*/lib/modules/*/modules.builtin' \
    '*/lib/modules/*/kernel/net/*' '*/lib/modules/*/kernel/drivers/net/*'
  mv "$deb" "$dir/"
  touch "$dir/complete"
  kdir=$dir kpkg=$pkg
}

# fetch_kernel_suite SUITE: the newest linux-image-6.*+deb12-amd64-unsigned
# of a Debian suite (not in apt's sources here), straight from the mirror:
# InRelease checked with gpgv against debian-archive-keyring, Packages.xz
# and the .deb against the SHA256 sums they list.
fetch_kernel_suite() {
  local suite=$1 base=${VMTEST_MIRROR:-http://deb.debian.org/debian}
  local d=$cache/kernel/suite-$suite
  mkdir -p "$d"
  if [ -f "$d/current" ] && [ -f "$cache/kernel/$(cat "$d/current")/complete" ]; then
    kpkg=$(cat "$d/current") kdir=$cache/kernel/$kpkg
    say "kernel: $kpkg from $suite (cached)"
    return
  fi
  command -v curl >/dev/null && command -v gpgv >/dev/null ||
    die "VMTEST_KERNEL_SUITE needs curl and gpgv (apt-get install curl gpgv debian-archive-keyring)"
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -f "$keyring" ] || die "VMTEST_KERNEL_SUITE needs $keyring (apt-get install debian-archive-keyring)"
  say "kernel: looking up $suite at $base"
  curl -fsS --max-time 60 -o "$d/InRelease" "$base/dists/$suite/InRelease" ||
    die "no kernel package reachable: cannot fetch $base/dists/$suite/InRelease"
  gpgv --keyring "$keyring" "$d/InRelease" 2>"$d/gpgv.err" ||
    { cat "$d/gpgv.err" >&2; die "$suite's InRelease does not verify against $keyring"; }
  local want got
  want=$(awk '/^SHA256:/ { s = 1; next } /^[^ ]/ { s = 0 } s && $3 == "main/binary-amd64/Packages.xz" { print $1 }' "$d/InRelease")
  [ -n "$want" ] || die "$suite's InRelease lists no main/binary-amd64/Packages.xz"
  curl -fsS --max-time 120 -o "$d/Packages.xz" "$base/dists/$suite/main/binary-amd64/Packages.xz" ||
    die "cannot fetch $suite's Packages.xz"
  got=$(sha256sum "$d/Packages.xz" | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "$suite's Packages.xz: sha256 $got, InRelease says $want"
  # Package, Filename and SHA256 of the newest generic kernel.
  local line pkg file sum
  line=$(xz -dc "$d/Packages.xz" | awk '
    /^Package: / { p = $2; f = ""; h = "" }
    /^Filename: / { f = $2 }
    /^SHA256: / { h = $2 }
    /^$/ { if (p ~ /^linux-image-6\.[0-9.]+\+deb12-amd64-unsigned$/ && f != "") print p, f, h; p = "" }
    END { if (p ~ /^linux-image-6\.[0-9.]+\+deb12-amd64-unsigned$/ && f != "") print p, f, h }' |
    sort -V | tail -n 1)
  read -r pkg file sum <<<"$line"
  [ -n "${sum:-}" ] || die "$suite lists no linux-image-6.*+deb12-amd64-unsigned"
  if [ ! -f "$cache/kernel/$pkg/complete" ]; then
    say "kernel: downloading $pkg from $suite"
    local deb=$d/$(basename "$file")
    curl -fsS --max-time 900 -o "$deb" "$base/$file" || die "cannot fetch $base/$file"
    got=$(sha256sum "$deb" | cut -d' ' -f1)
    [ "$got" = "$sum" ] || { rm -f "$deb"; die "$file: sha256 $got, Packages says $sum"; }
    extract_kernel "$deb" "$pkg"
  fi
  echo "$pkg" >"$d/current"
  kpkg=$pkg kdir=$cache/kernel/$pkg
}

if [ -n "${VMTEST_KERNEL_SUITE:-}" ]; then
  fetch_kernel_suite "$VMTEST_KERNEL_SUITE"
else
  fetch_kernel
fi
vmlinuz=$(find "$kdir" -path '*/boot/vmlinuz-*' | head -n 1)
modroot=$(dirname "$(find "$kdir" -name modules.builtin | head -n 1)")
[ -f "$vmlinuz" ] && [ -f "$modroot/modules.builtin" ] || die "kernel cache $kdir is incomplete: remove it (rm -rf $kdir) and run again"

# Boot the uncompressed ELF through its PVH entry when it can be had: under
# emulation the firmware plus the bzImage's own xz decompressor take ~20 s,
# the direct ELF boot ~3 s. Falls back to the bzImage.
boot_kernel=$vmlinuz
if [ ! -s "$kdir/vmlinux" ]; then
  off=$(grep -abo $'\xfd7zXZ\x00' "$vmlinuz" | head -n 1 | cut -d: -f1 || true)
  # xz stops after the stream and tail dies of SIGPIPE: judge by the result.
  [ -n "$off" ] && { tail -c +$((off + 1)) "$vmlinuz" | xz -dc --single-stream >"$kdir/vmlinux.tmp" 2>/dev/null || true; }
  if [ -s "$kdir/vmlinux.tmp" ] && [ "$(head -c 4 "$kdir/vmlinux.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
    mv "$kdir/vmlinux.tmp" "$kdir/vmlinux"
  else
    rm -f "$kdir/vmlinux.tmp"
    say "could not unpack an ELF vmlinux from $(basename "$vmlinuz") (not xz?): booting the bzImage, slower"
  fi
fi
[ -s "$kdir/vmlinux" ] && boot_kernel=$kdir/vmlinux

# --- modules ---------------------------------------------------------------
order=()
resolve_module() { # appends $1 and what it depends on to order, deps first
  local m=$1 f d
  for d in "${order[@]}"; do [ "$d" = "$m" ] && return; done
  f=$(find "$modroot" \( -name "$m.ko*" -o -name "${m//_/-}.ko*" \) | head -n 1)
  if [ -z "$f" ]; then
    grep -qE "/(${m}|${m//_/-})\.ko" "$modroot/modules.builtin" && return # built in
    die "kernel module $m is neither in $(basename "$modroot")'s net modules nor built in"
  fi
  local cat=(cat)
  case "$f" in *.xz) cat=(xz -dc) ;; esac # 6.12's modules are compressed
  for d in $("${cat[@]}" "$f" 2>/dev/null | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' ' ' || true); do
    resolve_module "$d"
  done
  order+=("$m")
  modfile[$m]=$f
}
declare -A modfile
for m in $MODULES; do resolve_module "$m"; done

# --- the initramfs ---------------------------------------------------------
work=$cache/work
rm -rf "$work" && mkdir -p "$work"
stage=$work/root
mkdir -p "$stage"/{bin,dev,proc,sys,run,tmp,root,etc/vmtest,lib/modules,tests,pkgs,var}
ln -s bin "$stage/sbin" && mkdir -p "$stage/usr" && ln -s ../bin "$stage/usr/bin" && ln -s ../bin "$stage/usr/sbin"
ln -s /run "$stage/var/run"
cp "$busybox" "$stage/bin/busybox"
for a in $("$busybox" --list); do
  case "$a" in
    busybox|ip|tc) ;; # no iproute2 in the VM: tests use netlink, not a half ip
    *) ln -sf busybox "$stage/bin/$a" ;;
  esac
done
mknod -m 600 "$stage/dev/console" c 5 1
mknod -m 666 "$stage/dev/null" c 1 3
printf '127.0.0.1 localhost\n::1 localhost\n' >"$stage/etc/hosts"
echo 'root:x:0:0:root:/root:/bin/sh' >"$stage/etc/passwd"
echo 'root:x:0:' >"$stage/etc/group"
cp "$here/init.sh" "$stage/init" && chmod 755 "$stage/init"

# In /lib/modules/VERSION, where busybox's depmod and modprobe (the kernel's
# module autoloader) look.
moddir=$stage/lib/modules/$(basename "$modroot")
mkdir -p "$moddir"
for m in "${order[@]}"; do
  f=${modfile[$m]}
  case "$f" in
    *.ko) cp "$f" "$moddir/$m.ko" ;;
    *.ko.xz) xz -dc "$f" >"$moddir/$m.ko" ;;
    *.ko.zst) zstd -qdc "$f" >"$moddir/$m.ko" ;;
    *.ko.gz) gzip -dc "$f" >"$moddir/$m.ko" ;;
    *) die "module file $f: unknown compression" ;;
  esac
  echo "$m" >>"$stage/etc/vmtest/modules"
done

{
  echo "export HOPSCOPE_VM=1"
  # the release the guest must find itself on: vmlinuz-RELEASE
  echo "export HOPSCOPE_VM_KERNEL=$(basename "$vmlinuz" | sed 's/^vmlinuz-//')"
  [ "$selftest" = fail ] && echo "export HOPSCOPE_VMTEST_SELFTEST=fail"
  true
} >"$stage/etc/vmtest/env"
case "$selftest" in
  hang) echo 'echo "vmtest-init: VMTEST_SELFTEST=hang: hanging"; while :; do sleep 3600; done' >>"$stage/etc/vmtest/env" ;;
  panic) echo 'echo "vmtest-init: VMTEST_SELFTEST=panic: init exits"; exit 1' >>"$stage/etc/vmtest/env" ;;
esac

# Test binaries: static, copied into the image and called by absolute path
# (they re-execute os.Args[0] for children), run from a copy of the
# package's testdata.
module=$(cd "$root" && go list -m)
included=() left_out=() dirs=()
: >"$stage/etc/vmtest/tests.sh"
while IFS='|' read -r dir filter tmo; do
  [ -n "$dir" ] || continue
  pkg=${dir#./}
  if [ ! -d "$root/$pkg" ]; then left_out+=("$pkg (no such package yet)"); continue; fi
  ntests=$(cd "$root" && go list -f '{{len .TestGoFiles}} {{len .XTestGoFiles}}' "$dir" 2>/dev/null | awk '{print $1+$2}') || ntests=0
  if [ "${ntests:-0}" -eq 0 ]; then left_out+=("$pkg (no tests)"); continue; fi
  name=$(basename "$pkg") # go test -c -o DIR/ names each binary after its package
  [ ! -d "$stage/pkgs/$name" ] || die "two packages named $name in PACKAGES: rename one"
  mkdir -p "$stage/pkgs/$name"
  [ -d "$root/$pkg/testdata" ] && cp -r "$root/$pkg/testdata" "$stage/pkgs/$name/"
  args="-test.v -test.count=1 -test.timeout=$tmo"
  [ -n "$filter" ] && args="$args '-test.run=$filter'"
  echo "run_pkg $module/$pkg /pkgs/$name /tests/$name.test $args" >>"$stage/etc/vmtest/tests.sh"
  included+=("$pkg") dirs+=("$dir")
done <<<"$PACKAGES"
if [ ${#dirs[@]} -gt 0 ]; then
  say "building the tests of ${included[*]} (CGO_ENABLED=0 go test -c)"
  tb=$(date +%s)
  (cd "$root" && CGO_ENABLED=0 go test -c -o "$stage/tests/" "${dirs[@]}") || die "building the tests for the VM failed (see above)"
  say "built in $(( $(date +%s) - tb ))s"
fi
[ ${#included[@]} -gt 0 ] || die "no package with tests to run in the VM"
say "packages in the VM: ${included[*]}"
[ ${#left_out[@]} -eq 0 ] || say "left out: ${left_out[*]}"
[ -z "$selftest" ] || say "VMTEST_SELFTEST=$selftest: this run must FAIL"

initrd=$work/initramfs.cpio
(cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet -R 0:0) >"$initrd"
say "kernel $kpkg ($(basename "$boot_kernel")), modules: ${order[*]}, initramfs $(( $(stat -c %s "$initrd") >> 20 )) MiB; prepared in $(( $(date +%s) - t0 ))s"

# --- the VM ----------------------------------------------------------------
log=$cache/console.log
: >"$log"
qpid='' tpid=''
stop_vm() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
    kill -TERM "$qpid" 2>/dev/null || true # timeout(1) passes it on to qemu
    for _ in 1 2 3 4 5; do kill -0 "$qpid" 2>/dev/null || break; sleep 1; done
    # timeout(1) leads its own process group: qemu is in it.
    if kill -0 "$qpid" 2>/dev/null; then kill -KILL -- "-$qpid" 2>/dev/null || true; fi
  fi
  if [ -n "$tpid" ]; then kill "$tpid" 2>/dev/null || true; fi
}
trap stop_vm EXIT
trap 'exit 130' INT TERM

# timeout(1) is a backstop should this script itself be killed; the loop
# below enforces the limit and says so.
timeout -k 10 $((timeout_s + 30)) "$qemu" \
  -accel tcg,thread=multi -cpu "${VMTEST_CPU:-max}" -m "$mem" -smp "$smp" \
  -nodefaults -display none -no-reboot -monitor none \
  -serial "file:$log" \
  -kernel "$boot_kernel" -initrd "$initrd" -append "$APPEND" </dev/null &
qpid=$!
# The guest turns off the console's CR/LF mapping; kernel lines keep a \r.
tail -n +1 -F --pid="$qpid" "$log" 2>/dev/null &
tpid=$!
say "qemu started (pid $qpid, TCG, ${mem} MiB, $smp CPUs), limit ${timeout_s}s"

vm_start=$(date +%s) timed_out=0
while kill -0 "$qpid" 2>/dev/null; do
  if (( $(date +%s) - vm_start >= timeout_s )); then timed_out=1; break; fi
  sleep 1
done
vm_secs=$(( $(date +%s) - vm_start ))
if [ $timed_out = 1 ]; then
  stop_vm
else
  wait "$qpid" || true
fi
qpid=''
for _ in 1 2 3 4 5; do kill -0 "$tpid" 2>/dev/null || break; sleep 1; done # tail prints the rest
kill "$tpid" 2>/dev/null || true
tpid=''
echo

result=$(tr -d '\r' <"$log" | grep -ao 'HOPSCOPE-VMTEST-RESULT: [A-Z]* rc=[0-9]*' | tail -n 1 || true)
passed=$(tr -d '\r' <"$log" | grep -acE '^ *--- PASS' || true)
failed=$(tr -d '\r' <"$log" | grep -acE '^ *--- FAIL' || true)
skipped=$(tr -d '\r' <"$log" | grep -acE '^ *--- SKIP' || true)
say "VM ran ${vm_secs}s, total $(( $(date +%s) - t0 ))s; console log: $log"
if [ $timed_out = 1 ]; then
  die "VM did not finish within ${timeout_s}s (killed; raise VMTEST_TIMEOUT or see $log)"
fi
if grep -aq 'Kernel panic - not syncing' "$log"; then
  die "kernel panic in the VM: $(tr -d '\r' <"$log" | grep -a 'Kernel panic - not syncing' | head -n 1 | sed 's/^.*Kernel panic/Kernel panic/')"
fi
case "$result" in
  *": PASS rc=0")
    say "PASS on $kpkg: ${included[*]}"
    echo "vmtest: $passed passed, $failed failed, $skipped skipped"
    ;;
  *": FAIL "*)
    echo "vmtest: $passed passed, $failed failed, $skipped skipped"
    die "FAIL: ${result#*FAIL } package(s) failed inside the VM (see the vmtest-init: FAIL lines above)"
    ;;
  *) die "the VM stopped without a result line (qemu exited; see $log)" ;;
esac
