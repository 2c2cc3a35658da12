#!/usr/bin/env bash
# Sets the machine up (scripts/setup.sh), then runs every crate's unit tests and the end-to-end
# tests against containerd 1.6, 1.7 and 2.1. Needs root (the e2e tests run containerd).
#   sudo scripts/test.sh              all tests
#   sudo scripts/test.sh -- FILTER    extra args go to the test binaries (e.g. a test name)
# Env: AMPHI_TEST_THREADS (default 2): e2e cases run in parallel, each with its own containerd.
#      AMPHI_SKIP_RUNC=1: skip the runc validation run of the e2e cases.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ "$(id -u)" = 0 ] || { echo "test.sh: ERROR: the end-to-end tests need root: sudo $0" >&2; exit 1; }

scripts/setup.sh
command -v cargo >/dev/null 2>&1 || export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

threads=${AMPHI_TEST_THREADS:-2}
extra=()
if [ "${1:-}" = "--" ]; then shift; extra=("$@"); fi

status=0
echo "== unit and end-to-end tests (io.containerd.amphi.v1) =="
cargo test --release --workspace --no-fail-fast -- --test-threads "$threads" "${extra[@]}" || status=$?

if [ "${AMPHI_SKIP_RUNC:-0}" != 1 ]; then
  # The same e2e cases against runc: tells a wrong test from a wrong shim.
  echo "== end-to-end cases against io.containerd.runc.v2 (harness validation) =="
  cargo test --release -p amphi-tests --no-fail-fast -- --ignored --test-threads "$threads" "${extra[@]}" || status=$?
fi
exit $status
