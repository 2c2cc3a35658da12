#!/usr/bin/env bash
# Prepares a Debian 12 machine (as root) to build amphi and run its tests, demo and bench.
# Idempotent: re-running only does what is missing.
#   - Debian packages: containerd (1.6, used as is), runc, busybox-static, python3, hyperfine, wrk,
#     protobuf-compiler (the CRI client crate of the tests), containernetworking-plugins (CRI tests),
#     libseccomp-dev (runtime-native links libseccomp for seccomp filters), ...
#   - checks the Rust toolchain (rustup/cargo must already be installed; it is not fetched here)
#     and the wasm32-wasip1/wasip2 targets
#   - containerd 1.7 and 2.1 unpacked under .cache/containerd (tests/scripts/fetch-containerd.sh)
#   - the cgroup v2 test guest: qemu-system-x86, e2fsprogs, and tests/vm/build.sh (.cache/vm)
#   - cargo build --release --workspace
# Env: AMPHI_SKIP_BUILD=1 skips the cargo build.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
log() { echo "setup: $*" >&2; }
die() { echo "setup: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (sudo $0): it installs packages"
export DEBIAN_FRONTEND=noninteractive

pkgs=(containerd runc busybox-static python3 hyperfine wrk build-essential pkg-config git curl
      ca-certificates util-linux procps iproute2 iptables
      protobuf-compiler containernetworking-plugins libseccomp-dev)
# --- cgroup v2 guest (tests/vm/, tests/tests/cgroup_v2_vm.rs) --------------------------------
# QEMU (TCG) and mkfs.ext4 on the host; the guest's kernel and Debian tree (containerd, runc,
# busybox-static, libc) are downloaded and unpacked into .cache/vm by tests/vm/build.sh
# (apt-get download + dpkg-deb -x, below): nothing is installed into, or booted on, the host.
pkgs+=(qemu-system-x86 e2fsprogs)
# --- end of the cgroup v2 guest packages ------------------------------------------------------
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian package starts a system containerd; the tests and demo run their own private
# daemons and never use or stop it.

# Rust: rustup's toolchain in ~/.cargo/bin (Debian bookworm's cargo is too old for this workspace).
if ! command -v cargo >/dev/null 2>&1; then
  for d in "${CARGO_HOME:-$HOME/.cargo}/bin" /root/.cargo/bin /usr/local/cargo/bin; do
    [ -x "$d/cargo" ] && export PATH="$d:$PATH" && break
  done
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain >= 1.85 with rustup (Debian 12's cargo 0.66 is too old)"
log "$(cargo --version)"
if command -v rustup >/dev/null 2>&1; then
  installed=$(rustup target list --installed)
  for t in wasm32-wasip1 wasm32-wasip2; do
    if ! grep -qx "$t" <<<"$installed"; then
      rustup target add "$t" || log "WARNING: could not add rust target $t (wasm examples will not build)"
    fi
  done
else
  log "WARNING: rustup not found; cannot check the wasm32-wasip1/wasip2 targets"
fi

log "fetching containerd 1.7 and 2.1"
tests/scripts/fetch-containerd.sh
for v in 1.7 2.1; do
  [ -x ".cache/containerd/$v/usr/bin/containerd" ] || die "containerd $v missing after fetch-containerd.sh"
done

log "cgroup v2 guest: kernel, initramfs and Debian tree (tests/vm/build.sh)"
tests/vm/build.sh

if [ "${AMPHI_SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release --workspace"
  cargo build --release --workspace
  [ -x target/release/containerd-shim-amphi-v1 ] || [ -n "${CARGO_TARGET_DIR:-}" ] \
    || die "target/release/containerd-shim-amphi-v1 was not built"
fi
log "done"
