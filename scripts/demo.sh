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
trap 'exit 130' INT TERM

RT=io.containerd.amphi.v1
echo "== starting a private containerd $(/usr/bin/containerd --version | awk '{print $3}')"
cd_start /usr/bin
import_busybox

echo "== native: ctr run --rm --runtime $RT docker.io/amphi/busybox:e2e demo-native echo hello from a native container"
ctrx run --rm --runtime "$RT" docker.io/amphi/busybox:e2e demo-native echo hello from a native container
echo "   (exit $?)"
# The wasm hello from examples/wasm (examples/wasm/build.sh writes out/; the repo ships them),
# as the entrypoint of a busybox rootfs image: amphi detects the module and runs it with wasmtime.
wasm=examples/wasm/out/hello.wasm
if [ -f "$wasm" ]; then
  tar="$CD_DIR/hello-wasm.tar"
  python3 tests/scripts/mkimage.py rootfs "$tar" docker.io/amphi/hello-wasm:demo \
    --file "$wasm:/hello.wasm" --entrypoint /hello.wasm --cmd
  ctrx images import "$tar" >/dev/null
  echo "== wasm: ctr run --rm --runtime $RT docker.io/amphi/hello-wasm:demo demo-wasm"
  ctrx run --rm --runtime "$RT" docker.io/amphi/hello-wasm:demo demo-wasm
  echo "   (exit $?)"
else
  echo "== wasm: skipped ($wasm missing; build it with examples/wasm/build.sh)"
fi
echo "== demo done"
