#!/usr/bin/env bash
# Wasm bench of io.containerd.amphi.v1 on one private containerd, side by side in one run:
#   1. start-to-exit (hyperfine): `ctr run --rm` of hello.wasm with an empty compile cache
#      (cache miss: the cache dir is removed before every run), the same with a warm cache
#      (cache hit), and native busybox `true` through amphi. Goal: hit <= 1.2x native. On
#      containerd 1.7/2.1 also a cache hit of hello.wasm carried as an image layer (the shim
#      reads it from containerd's content store; 1.6 cannot unpack such images).
#   2. memory: Pss of the shim and all its processes with one sleeping wasm container, then
#      with 21 in the same shim (group annotation); growth per extra container. Goal <= 3 MiB.
#   3. wasi:http: requests/s of the http-hello component with wrk, run inside the container's
#      network namespace (nsenter -t <task pid> -n), on loopback.
# Prints a table and writes target/bench/wasm/{start.json,start.md,summary.json,table.txt}
# (BENCH_OUT overrides).
#   sudo bench/wasm.sh
# Env: BENCH_RUNS (default 30), BENCH_WARMUP (default 3), BENCH_EXTRA (default 20),
#      BENCH_WRK_DURATION (default 5s), BENCH_CONTAINERD=1.6|1.7|2.1 (default 1.6).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
[ "$(id -u)" = 0 ] || { echo "bench: run as root: sudo $0" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "bench: hyperfine missing (scripts/setup.sh installs it)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench: wrk missing: apt-get install wrk" >&2; exit 1; }
[ -x target/release/containerd-shim-amphi-v1 ] || { echo "bench: build first: cargo build --release -p amphi-shim" >&2; exit 1; }
for m in hello sleeper http-hello; do
  [ -f "examples/wasm/out/$m.wasm" ] || { echo "bench: examples/wasm/out/$m.wasm missing: run examples/wasm/build.sh" >&2; exit 1; }
done
runs=${BENCH_RUNS:-30}
warmup=${BENCH_WARMUP:-3}
extra=${BENCH_EXTRA:-20}
wrk_dur=${BENCH_WRK_DURATION:-5s}
case "${BENCH_CONTAINERD:-1.6}" in
  1.6) bindir=/usr/bin ;;
  1.7|2.1) bindir=$top/.cache/containerd/${BENCH_CONTAINERD}/usr/bin ;;
  *) echo "bench: BENCH_CONTAINERD must be 1.6, 1.7 or 2.1" >&2; exit 1 ;;
esac
[ -x "$bindir/containerd" ] || { echo "bench: $bindir/containerd missing: run tests/scripts/fetch-containerd.sh" >&2; exit 1; }

AMPHI_TOP=$top
. scripts/lib-containerd.sh
cache_root=$(mktemp -d /tmp/amphi-wasm-bench-cache.XXXXXX)
cleanup() { cd_stop; rm -rf "$cache_root"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
# The shims containerd starts inherit the daemon's environment: a private compile cache.
export AMPHI_WASM_CACHE_DIR=$cache_root/cache
cd_start "$bindir"
unset AMPHI_WASM_CACHE_DIR
import_busybox
BB=docker.io/amphi/busybox:e2e
WIMG=docker.io/amphi/wasm-bench:bench
wtar=$CD_DIR/wasm-bench.tar
python3 tests/scripts/mkimage.py rootfs "$wtar" "$WIMG" \
  --file "examples/wasm/out/hello.wasm:/hello.wasm" \
  --file "examples/wasm/out/sleeper.wasm:/sleeper.wasm" \
  --file "examples/wasm/out/http-hello.wasm:/http-hello.wasm"
ctrx images import "$wtar" >/dev/null
layer_bench=()
if [ "${BENCH_CONTAINERD:-1.6}" != 1.6 ]; then
  LIMG=docker.io/amphi/wasm-layer-bench:bench
  python3 tests/scripts/mkimage.py wasm-layer "$CD_DIR/wasm-layer.tar" "$LIMG" examples/wasm/out/hello.wasm
  ctrx images import --all-platforms "$CD_DIR/wasm-layer.tar" >/dev/null
fi
AMPHI=io.containerd.amphi.v1
out=${BENCH_OUT:-$top/target/bench/wasm}
mkdir -p "$out"

# Sanity, and a cache miss then a hit visible in the shim's log.
ctrx run --rm --runtime $AMPHI "$BB" bench-check true
ctrx run --rm --runtime $AMPHI "$WIMG" bench-check /hello.wasm | grep -q "hello from wasm" \
  || { echo "bench: hello.wasm does not run; log: $CD_DIR/containerd.log" >&2; tail -n 30 "$CD_DIR/containerd.log" >&2; exit 1; }
ctrx run --rm --runtime $AMPHI "$WIMG" bench-check /hello.wasm >/dev/null
grep -q "wasm /hello.wasm: .*(compiled)" "$CD_DIR/containerd.log" && grep -q "wasm /hello.wasm: .*(cache hit)" "$CD_DIR/containerd.log" \
  || echo "bench: warning: expected a 'compiled' then a 'cache hit' line in the shim log" >&2

ctr_run="$CD_BIN/ctr --address $CD_SOCK --namespace $CD_NS run --rm --runtime $AMPHI"
if [ -n "${LIMG:-}" ]; then
  $ctr_run "$LIMG" bench-check /hello.wasm | grep -q "hello from wasm" \
    || { echo "bench: the wasm-layer image does not run; log: $CD_DIR/containerd.log" >&2; exit 1; }
  layer_bench=(--prepare "true" -n wasm-layer-hit "$ctr_run $LIMG bench-layer /hello.wasm")
fi
echo "== start-to-exit: $runs runs each (warmup $warmup), containerd $("$bindir/containerd" --version | awk '{print $3}'), $(nproc) CPUs, load average $(cut -d" " -f1-3 /proc/loadavg)"
hyperfine -N --warmup "$warmup" --runs "$runs" \
  --export-json "$out/start.json" --export-markdown "$out/start.md" \
  --prepare "rm -rf $cache_root/cache" -n wasm-cache-miss "$ctr_run $WIMG bench-miss /hello.wasm" \
  --prepare "true" -n wasm-cache-hit "$ctr_run $WIMG bench-hit /hello.wasm" \
  --prepare "true" -n native-true "$ctr_run $BB bench-native true" \
  "${layer_bench[@]}"

echo "== memory: 1 then $((extra + 1)) sleeping wasm containers in one shim"
grp="io.containerd.runc.v2.group=wasm-bench-mem"
ctrx run -d --runtime $AMPHI --annotation "$grp" "$WIMG" mem-0 /sleeper.wasm 1000000 >/dev/null
sleep 2
pss_py='
import os, sys
sock = sys.argv[1]
def procs():
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = open(f"/proc/{d}/stat").read()
                ppid = int(st[st.rfind(")") + 2:].split()[1])
                argv = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
                yield int(d), ppid, os.path.basename(argv[0].decode(errors="replace")), b" ".join(argv).decode(errors="replace")
            except (OSError, ValueError, IndexError):
                pass
def pss(pid):
    try:
        for l in open(f"/proc/{pid}/smaps_rollup"):
            if l.startswith("Pss:"):
                return int(l.split()[1])
    except OSError:
        pass
    return 0
ps = list(procs())
roots = {p for p, _, name, cl in ps if name == "containerd-shim-amphi-v1" and sock in cl}
tree, frontier = set(roots), list(roots)
while frontier:
    x = frontier.pop()
    for p, pp, _, _ in ps:
        if pp == x and p not in tree:
            tree.add(p); frontier.append(p)
top = [p for p, pp, _, _ in ps if p in roots and pp not in roots]
print(sum(pss(p) for p in tree), len(tree), len(top))
'
read -r pss1 n1 shims1 < <(python3 -c "$pss_py" "$CD_SOCK")
for i in $(seq 1 "$extra"); do
  ctrx run -d --runtime $AMPHI --annotation "$grp" "$WIMG" "mem-$i" /sleeper.wasm 1000000 >/dev/null
done
sleep 3
read -r pssn nn shimsn < <(python3 -c "$pss_py" "$CD_SOCK")
running=$(ctrx task ls | awk '$3 == "RUNNING"' | grep -c '^mem-' || true)
echo "  1 container: Pss ${pss1} KiB over $n1 processes ($shims1 shim); $((extra + 1)) containers ($running running): ${pssn} KiB over $nn processes ($shimsn shim)"
[ "$shimsn" = 1 ] || echo "bench: warning: expected one shim for the group, found $shimsn" >&2
for i in $(seq 0 "$extra"); do
  ctrx task kill -s SIGKILL "mem-$i" >/dev/null 2>&1 || true
done
sleep 1
for i in $(seq 0 "$extra"); do
  ctrx task delete "mem-$i" >/dev/null 2>&1 || true
  ctrx containers delete "mem-$i" >/dev/null 2>&1 || true
done

echo "== wasi:http: wrk -t2 -c32 -d$wrk_dur inside the container's netns"
ctrx run -d --runtime $AMPHI "$WIMG" http /http-hello.wasm >/dev/null
hpid=$(ctrx task ls | awk '$1 == "http" {print $2}')
ok=
for _ in $(seq 1 100); do
  if body=$(nsenter -t "$hpid" -n curl -fsS --max-time 2 http://127.0.0.1:8080/ 2>/dev/null); then ok=1; break; fi
  sleep 0.1
done
[ -n "$ok" ] || { echo "bench: http-hello does not answer on 127.0.0.1:8080 in its netns" >&2; tail -n 30 "$CD_DIR/containerd.log" >&2; exit 1; }
echo "  body: $body"
nsenter -t "$hpid" -n wrk -t2 -c32 -d"$wrk_dur" --latency http://127.0.0.1:8080/ | tee "$out/wrk.txt"
ctrx task kill -s SIGKILL http >/dev/null 2>&1 || true

python3 - "$out" "$pss1" "$pssn" "$extra" <<'PY'
import json, os, re, sys
out, pss1, pssn, extra = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
start = {r["command"]: r for r in json.load(open(os.path.join(out, "start.json")))["results"]}
miss, hit, nat = (start[k] for k in ("wasm-cache-miss", "wasm-cache-hit", "native-true"))
wrk = open(os.path.join(out, "wrk.txt")).read()
m = re.search(r"Requests/sec:\s+([\d.]+)", wrk)
rps = float(m.group(1)) if m else float("nan")
errs = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", wrk)
sock_errs = re.search(r"Socket errors:.*", wrk)
per_extra = (pssn - pss1) / extra / 1024
ratio_hit = hit["median"] / nat["median"]
rows = [
    ("ctr run --rm, median (ms)", ""),
    (f"  native busybox true", f"{nat['median']*1000:8.1f}   1.00x"),
    (f"  hello.wasm cache hit", f"{hit['median']*1000:8.1f}   {ratio_hit:.2f}x   goal <= 1.2x: {'MET' if ratio_hit <= 1.2 else 'NOT MET'}"),
    (f"  hello.wasm cache miss", f"{miss['median']*1000:8.1f}   {miss['median']/nat['median']:.2f}x"),
] + ([
    (f"  hello.wasm layer, cache hit", f"{start['wasm-layer-hit']['median']*1000:8.1f}   {start['wasm-layer-hit']['median']/nat['median']:.2f}x"),
] if "wasm-layer-hit" in start else []) + [
    ("Pss, shim + its processes (KiB)", ""),
    (f"  1 sleeping wasm container", f"{pss1:8d}"),
    (f"  {extra+1} sleeping wasm containers", f"{pssn:8d}"),
    (f"  per extra container", f"{per_extra*1024:8.0f}   ({per_extra:.2f} MiB)   goal <= 3 MiB: {'MET' if per_extra <= 3 else 'NOT MET'}"),
    ("wasi:http hello (wrk -t2 -c32)", ""),
    (f"  requests/s", f"{rps:8.0f}" + (f"   non-2xx: {errs.group(1)}" if errs else "") + (f"   {sock_errs.group(0)}" if sock_errs else "")),
]
text = "\n".join(f"{a:<36}{b}" for a, b in rows)
print("\n" + text)
open(os.path.join(out, "table.txt"), "w").write(text + "\n")
json.dump({"start_median_s": {"native": nat["median"], "hit": hit["median"], "miss": miss["median"]},
           "start_mean_s": {"native": nat["mean"], "hit": hit["mean"], "miss": miss["mean"]},
           "pss_kib": {"one": pss1, "n": pssn, "extra": extra, "per_extra_mib": per_extra},
           "http_rps": rps}, open(os.path.join(out, "summary.json"), "w"), indent=2)
PY
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg) (numbers are noisy on a busy machine)"
echo "results in $out/"
