# Sourced by bench/run.sh and bench/wasm.sh (from the repository root): the preconditions both
# check first and the containerd both run against, so the two cannot drift apart.

# Exits with a message naming the fix unless we are root, hyperfine is installed and the
# release shim is built.
bench_preflight() {
  [ "$(id -u)" = 0 ] || { echo "bench: run as root: sudo $0" >&2; exit 1; }
  command -v hyperfine >/dev/null || { echo "bench: hyperfine missing (scripts/setup.sh installs it)" >&2; exit 1; }
  [ -x target/release/containerd-shim-amphi-v1 ] || { echo "bench: build first: cargo build --release -p amphi-shim (or scripts/setup.sh)" >&2; exit 1; }
}

# Sets bindir to the binaries of containerd BENCH_CONTAINERD (1.6, Debian's, by default; 1.7
# and 2.1 from .cache/containerd under $1, the repository root); exits when they are missing.
bench_containerd_bindir() {
  case "${BENCH_CONTAINERD:-1.6}" in
    1.6) bindir=/usr/bin ;;
    1.7|2.1) bindir=$1/.cache/containerd/${BENCH_CONTAINERD}/usr/bin ;;
    *) echo "bench: BENCH_CONTAINERD must be 1.6, 1.7 or 2.1" >&2; exit 1 ;;
  esac
  [ -x "$bindir/containerd" ] || { echo "bench: $bindir/containerd missing: run tests/scripts/fetch-containerd.sh" >&2; exit 1; }
}
