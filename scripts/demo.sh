#!/usr/bin/env bash
# Demo: sets the machine up, starts a private containerd (Debian's 1.6), and runs a native
# container and (when the wasm examples are built) a wasm container with io.containerd.amphi.v1.
#   sudo scripts/demo.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root: sudo $0" >&2; exit 1; }
scripts/setup.sh
AMPHI_TOP=$top
. scripts/lib-containerd.sh
trap cd_stop EXIT

RT=io.containerd.amphi.v1
echo "== starting a private containerd $(/usr/bin/containerd --version | awk '{print $3}')"
cd_start /usr/bin
import_busybox

echo "== native: ctr run --rm --runtime $RT docker.io/amphi/busybox:e2e demo-native echo hello from a native container"
ctrx run --rm --runtime "$RT" docker.io/amphi/busybox:e2e demo-native echo hello from a native container
echo "   (exit $?)"

# A wasm hello from examples/wasm, if it has been built (examples/wasm/build.sh).
wasm=""
for f in examples/wasm/out/hello.wasm examples/wasm/target/wasm32-wasip1/release/hello.wasm \
         examples/wasm/target/wasm32-wasip2/release/hello.wasm; do
  [ -f "$f" ] && wasm=$f && break
done
if [ -n "$wasm" ]; then
  # A component has layer byte 1 and version 0x0d (bytes 4..7 = 0d 00 01 00).
  comp=()
  [ "$(od -An -tx1 -j4 -N4 "$wasm" | tr -d ' ')" = "0d000100" ] && comp=(--component)
  tar="$CD_DIR/hello-wasm.tar"
  python3 tests/scripts/mkimage.py wasm-layer "$tar" docker.io/amphi/hello-wasm:demo "$wasm" "${comp[@]}"
  ctrx images import --all-platforms "$tar" >/dev/null
  echo "== wasm ($wasm${comp:+, component}): ctr run --rm --runtime $RT docker.io/amphi/hello-wasm:demo demo-wasm"
  if ctrx run --rm --runtime "$RT" docker.io/amphi/hello-wasm:demo demo-wasm; then
    echo "   (exit 0)"
  else
    echo "   wasm run failed (exit $?); containerd log: $CD_DIR/containerd.log" >&2
    tail -n 30 "$CD_DIR/containerd.log" >&2
    exit 1
  fi
else
  echo "== wasm: skipped (no examples/wasm/out/hello.wasm; build it with examples/wasm/build.sh)"
fi
echo "== demo done"
