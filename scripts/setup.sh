#!/usr/bin/env bash
# Installs what hopscope's build, tests and demo need, where it is missing.
# Idempotent and quiet when everything is there. Needs root for apt-get.
#   scripts/setup.sh [test|demo|generate|vmtest]...   (default: test)
set -eu -o pipefail

want=()
need() { # need COMMAND-OR-PATH PACKAGE
  case "$1" in
    /*) [ -e "$1" ] || want+=("$2") ;;
    *) command -v "$1" >/dev/null 2>&1 || want+=("$2") ;;
  esac
}

for what in "${@:-test}"; do
  case "$what" in
    test|demo)
      need ip iproute2
      need nft nftables
      need haproxy haproxy
      need /usr/sbin/nginx nginx-light
      need caddy caddy
      need make make
      ;;
    generate)
      need clang clang
      need llvm-strip llvm
      need /usr/include/bpf/bpf_helpers.h libbpf-dev
      need bpftool bpftool
      ;;
    vmtest)
      need qemu-system-x86_64 qemu-system-x86
      need /bin/busybox busybox-static
      need cpio cpio
      need xz xz-utils
      need curl curl
      need gpgv gpgv
      need /usr/share/keyrings/debian-archive-keyring.gpg debian-archive-keyring
      ;;
    *) echo "setup.sh: unknown part '$what' (want test, demo, generate or vmtest)" >&2; exit 2 ;;
  esac
done

if [ ${#want[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "hopscope needs these packages (no apt-get here, install them yourself): ${want[*]}" >&2
    exit 1
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "hopscope needs these packages: ${want[*]}; run as root or: sudo apt-get install ${want[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${want[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${want[@]}" >/dev/null
fi
