#!/usr/bin/env bash
# `amphi-oci run` vs `runc run` vs `crun run` of a busybox `true` bundle, side by side with
# hyperfine; prints each runtime's mean and its ratio to amphi-oci.
#
#   sudo bench/oci.sh            # RUNS=30 WARMUP=3 by default
#   RUNS=100 sudo bench/oci.sh
#   NO_CRUN_INSTALL=1 ...        # do not apt-get install crun when it is missing
#
# Needs root, hyperfine, runc, /bin/busybox (busybox-static), python3 or jq for the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-30}
WARMUP=${WARMUP:-3}

if [ "$(id -u)" != 0 ]; then
    echo "bench/oci.sh: needs root" >&2
    exit 1
fi
for t in hyperfine runc; do
    command -v "$t" >/dev/null || { echo "bench/oci.sh: $t not found" >&2; exit 1; }
done
if ! command -v crun >/dev/null && [ -z "${NO_CRUN_INSTALL:-}" ]; then
    echo "== crun not found; trying apt-get install crun" >&2
    (apt-get install -y -qq crun >/dev/null 2>&1 ||
        (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq crun >/dev/null 2>&1)) ||
        echo "== crun could not be installed; comparing with runc only" >&2
fi

cargo build --release -p amphi-oci >&2
AMPHI=$PWD/target/release/amphi-oci

WORK=$(mktemp -d /tmp/amphi-oci-bench.XXXXXX)
cleanup() {
    "$AMPHI" --root "$WORK/state-amphi" delete -f bench >/dev/null 2>&1 || true
    runc --root "$WORK/state-runc" delete -f bench >/dev/null 2>&1 || true
    if command -v crun >/dev/null; then
        crun --root "$WORK/state-crun" delete -f bench >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# The bundle: busybox rootfs, runc's default config with `true` and no terminal.
B=$WORK/bundle
mkdir -p "$B/rootfs"/{bin,proc,sys,dev,tmp,etc}
cp /bin/busybox "$B/rootfs/bin/busybox"
for l in sh true; do ln -s busybox "$B/rootfs/bin/$l"; done
(cd "$B" && runc spec)
python3 - "$B/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["true"]
json.dump(c, open(p, "w"), indent=1)
EOF

# Sanity: every runtime runs it and exits 0.
"$AMPHI" --root "$WORK/state-amphi" run -b "$B" bench
runc --root "$WORK/state-runc" run -b "$B" bench

cmds=(-n amphi-oci "$AMPHI --root $WORK/state-amphi run -b $B bench"
      -n runc "runc --root $WORK/state-runc run -b $B bench")
if command -v crun >/dev/null; then
    if err=$(crun --root "$WORK/state-crun" run -b "$B" bench 2>&1); then
        cmds+=(-n crun "crun --root $WORK/state-crun run -b $B bench")
    else
        echo "== crun cannot run here, left out: $err" >&2
    fi
fi

echo "== $(uname -r), $(nproc) cpus, $(runc --version | head -1)$(command -v crun >/dev/null && echo ", $(crun --version | head -1)")"
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$WORK/result.json" "${cmds[@]}"

echo
echo "== ratios (mean time / amphi-oci mean time; >1 means slower than amphi-oci)"
python3 - "$WORK/result.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
base = next(x for x in r if x["command"] == "amphi-oci")["mean"]
for x in r:
    print(f'{x["command"]:>10}: mean {x["mean"]*1000:7.2f} ms  ± {x["stddev"]*1000:5.2f}  '
          f'median {x["median"]*1000:7.2f} ms  ratio {x["mean"]/base:5.2f}x')
EOF
