#!/usr/bin/env bash
# CRI bench: pod start through containerd's CRI plugin with the runtime handler `amphi`
# (io.containerd.amphi.v1) vs `runc` (io.containerd.runc.v2), side by side on one private
# containerd with the CRI plugin, a private CNI bridge and the offline pause image of the e2e
# tests (tests/src/cri_env.rs).
#   1. pod start: RunPodSandbox + CreateContainer + StartContainer of one busybox `sleep`
#      until ContainerStatus says RUNNING; BENCH_RUNS runs per handler, interleaved; median,
#      p90 and the amphi/runc ratio (goal: <= 0.5x, issue 13).
#   2. BENCH_BURST (20) pods started at once, one CRI connection each: pods per second
#      (median over BENCH_BURST_ROUNDS rounds).
# Prints a table and writes target/bench/cri.json (BENCH_OUT overrides the directory).
#   sudo bench/cri.sh
# Env: BENCH_RUNS (default 20), BENCH_WARMUP (3), BENCH_BURST (20), BENCH_BURST_ROUNDS (3),
#      BENCH_CONTAINERD=1.6|1.7|2.1 (default 2.1).
# Needs: scripts/setup.sh (containerd 1.7/2.1, runc, busybox-static, containernetworking-plugins,
#        protobuf-compiler, gcc).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ "$(id -u)" = 0 ] || { echo "bench: run as root: sudo $0" >&2; exit 1; }
command -v cargo >/dev/null 2>&1 || export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
[ -d /usr/lib/cni ] || { echo "bench: CNI plugins missing: apt-get install containernetworking-plugins (scripts/setup.sh)" >&2; exit 1; }
cargo build --release -q -p amphi-shim -p amphi-tests --bin cri-bench
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
exec "$target/release/cri-bench"
