# Shared by scripts/demo.sh and bench/run.sh (source it): a private containerd daemon in a
# temp dir, stopped by pid. Never touches the system's containerd.
#   cd_start VERSION_BIN_DIR   -> sets CD_DIR, CD_SOCK, CD_PID; exports nothing global
#   ctrx ARGS...               -> ctr against it (namespace "amphi")
#   cd_stop                    -> kills leftover tasks, stops the daemon, unmounts, removes CD_DIR
AMPHI_TOP=${AMPHI_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
CD_NS=amphi

cd_start() {
  local bindir=$1
  CD_BIN=$bindir
  CD_DIR=$(mktemp -d /tmp/amphi-cd.XXXXXX)
  CD_SOCK=$CD_DIR/c.sock
  mkdir -p "$CD_DIR/bin" "$CD_DIR/amphi/state" "$CD_DIR/amphi/sockets"
  ln -s "$AMPHI_TOP/target/release/containerd-shim-amphi-v1" "$CD_DIR/bin/containerd-shim-amphi-v1"
  cat > "$CD_DIR/config.toml" <<CONF
version = 2
root = "$CD_DIR/root"
state = "$CD_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
  "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CD_SOCK"
[ttrpc]
  address = "$CD_SOCK.ttrpc"
CONF
  PATH="$CD_DIR/bin:$bindir:$PATH" AMPHI_STATE_DIR="$CD_DIR/amphi/state" AMPHI_SOCKET_DIR="$CD_DIR/amphi/sockets" \
    setsid "$bindir/containerd" --config "$CD_DIR/config.toml" >"$CD_DIR/containerd.log" 2>&1 </dev/null &
  CD_PID=$!
  local i
  for i in $(seq 1 300); do
    if [ -S "$CD_SOCK" ] && ctrx version >/dev/null 2>&1; then return 0; fi
    kill -0 "$CD_PID" 2>/dev/null || { cat "$CD_DIR/containerd.log" >&2; echo "containerd exited at start" >&2; return 1; }
    sleep 0.1
  done
  echo "containerd did not start; log in $CD_DIR/containerd.log" >&2
  return 1
}

ctrx() { "$CD_BIN/ctr" --address "$CD_SOCK" --namespace "$CD_NS" "$@"; }

cd_stop() {
  [ -n "${CD_PID:-}" ] || return 0
  local id p
  for id in $(timeout 20 "$CD_BIN/ctr" --address "$CD_SOCK" --namespace "$CD_NS" containers ls -q 2>/dev/null); do
    timeout 20 "$CD_BIN/ctr" --address "$CD_SOCK" --namespace "$CD_NS" task kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
    sleep 0.2
    timeout 20 "$CD_BIN/ctr" --address "$CD_SOCK" --namespace "$CD_NS" task delete -f "$id" >/dev/null 2>&1 || true
    timeout 20 "$CD_BIN/ctr" --address "$CD_SOCK" --namespace "$CD_NS" containers delete "$id" >/dev/null 2>&1 || true
  done
  kill -TERM "$CD_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$CD_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$CD_PID" 2>/dev/null || true
  wait "$CD_PID" 2>/dev/null || true
  # shims this daemon started and that outlived it (their command line names our socket)
  for p in $(pgrep -f -- "-address $CD_SOCK" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
  # unmount anything left under our dir, deepest first
  grep -o " $CD_DIR/[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
  rm -rf "$CD_DIR"
  for c in /sys/fs/cgroup/*/"$CD_NS" /sys/fs/cgroup/"$CD_NS"; do [ -d "$c" ] && rmdir "$c" 2>/dev/null || true; done
  CD_PID=
}

# Builds (once) and imports the busybox test image as docker.io/amphi/busybox:e2e.
import_busybox() {
  local tar="$AMPHI_TOP/target/amphi-e2e/busybox-e2e.tar"
  if [ ! -f "$tar" ]; then
    mkdir -p "$(dirname "$tar")"
    python3 "$AMPHI_TOP/tests/scripts/mkimage.py" rootfs "$tar.$$" docker.io/amphi/busybox:e2e
    mv "$tar.$$" "$tar"
  fi
  ctrx images import "$tar" >/dev/null
}
