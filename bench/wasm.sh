#!/usr/bin/env bash
# Wasm bench of io.containerd.amphi.v1 on one private containerd, side by side in one run:
#   1. start-to-exit (hyperfine): `ctr run --rm` of hello.wasm with an empty compile cache
#      (cache miss: the cache dir is removed before every run), the same with a warm cache
#      (cache hit), and native busybox `true` through amphi. Goal: hit <= 1.1x native. On
#      containerd 1.7/2.1 also a cache hit of hello.wasm carried as an image layer (the shim
#      reads it from containerd's content store; 1.6 cannot unpack such images).
#   2. memory: Pss of the shim, its helpers and the task (every process of the shim's tree)
#      with one sleeping wasm container, then with BENCH_EXTRA more in the same pod
#      (io.kubernetes.cri.sandbox-id annotation); growth per extra container. Goal <= 0.6 MB.
#   3. wasi:http: wrk -t2 -c50 -d8s --latency on loopback against the component run with
#      --net-host (two rounds, best kept), for amphi both with its defaults (a fresh instance
#      per request) and as "amphi-reuse" (io.amphi.wasm.http.instance_reuse=1000), the Pss of
#      the idle http container and after the load,
#      then a plain hyper "hello" server on the same port (the ceiling:
#      target/release/hyper-hello).
# With PEER_SHIM_DIR naming a directory that holds runwasi's containerd-shim-wasmtime-v1, rows 2
# and 3 run for it too (runtime io.containerd.wasmtime.v1), side by side, and the table gives
# the ratios against the goals (>= 2x its req/s, <= 0.5x its p99, <= 1/3 its Pss).
# PEER_HTTP_WASM names the component to serve (runwasi's hello_wasi_http.wasm test module);
# default examples/wasm/out/http-hello.wasm. The peer is never built or fetched by this repo.
# Prints a table and writes target/bench/wasm/{start.json,start.md,summary.json,table.txt}
# (BENCH_OUT overrides).
#   sudo bench/wasm.sh
# Env: BENCH_RUNS (default 30), BENCH_WARMUP (default 3), BENCH_EXTRA (default 10),
#      BENCH_WRK_DURATION (default 8s), BENCH_CONTAINERD=1.6|1.7|2.1 (default 1.6),
#      PEER_SHIM_DIR, PEER_HTTP_WASM.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. bench/lib-bench.sh
bench_preflight
command -v wrk >/dev/null || { echo "bench: wrk missing: apt-get install wrk" >&2; exit 1; }
command -v curl >/dev/null || { echo "bench: curl missing" >&2; exit 1; }
for m in hello sleeper http-hello; do
  [ -f "examples/wasm/out/$m.wasm" ] || { echo "bench: examples/wasm/out/$m.wasm missing: run examples/wasm/build.sh" >&2; exit 1; }
done
runs=${BENCH_RUNS:-30}
warmup=${BENCH_WARMUP:-3}
extra=${BENCH_EXTRA:-10}
wrk_dur=${BENCH_WRK_DURATION:-8s}
bench_containerd_bindir "$top"

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
rm -f "$out"/wrk-*.txt "$out"/memory.txt "$out"/http-pss.txt "$out"/http-cpu.txt

# Sanity, and a cache miss then a hit visible in the shim's log.
ctrx run --rm --runtime $AMPHI "$BB" bench-check true
# Output captured first: `ctr ... | grep -q` fails under pipefail when grep exits before ctr has
# written its last line (SIGPIPE).
check_out=$(ctrx run --rm --runtime $AMPHI "$WIMG" bench-check /hello.wasm) || true
grep -q "hello from wasm" <<<"$check_out" \
  || { echo "bench: hello.wasm does not run; log: $CD_DIR/containerd.log" >&2; tail -n 30 "$CD_DIR/containerd.log" >&2; exit 1; }
ctrx run --rm --runtime $AMPHI "$WIMG" bench-check /hello.wasm >/dev/null
grep -q "wasm /hello.wasm: .*(compiled)" "$CD_DIR/containerd.log" && grep -q "wasm /hello.wasm: .*(cache hit)" "$CD_DIR/containerd.log" \
  || echo "bench: warning: expected a 'compiled' then a 'cache hit' line in the shim log" >&2

ctr_run="$CD_BIN/ctr --address $CD_SOCK --namespace $CD_NS run --rm --runtime $AMPHI"
if [ -n "${LIMG:-}" ]; then
  check_out=$($ctr_run "$LIMG" bench-check /hello.wasm) || true
  grep -q "hello from wasm" <<<"$check_out" \
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

# The process tree of every shim of runtime binary $1 that serves our containerd: Pss (KiB),
# processes, top-level shims.
pss_py='
import os, sys
binary, sock = sys.argv[1], sys.argv[2]
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
roots = {p for p, _, name, cl in ps if name == binary and sock in cl}
tree, frontier = set(roots), list(roots)
while frontier:
    x = frontier.pop()
    for p, pp, _, _ in ps:
        if pp == x and p not in tree:
            tree.add(p); frontier.append(p)
top = [p for p, pp, _, _ in ps if p in roots and pp not in roots]
print(sum(pss(p) for p in tree), len(tree), len(top))
'
pss_of() { python3 -c "$pss_py" "$1" "$CD_SOCK"; }
remove_all() {
  local id
  for id in "$@"; do ctrx task kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  sleep 1
  for id in "$@"; do
    ctrx task delete "$id" >/dev/null 2>&1 || true
    ctrx containers delete "$id" >/dev/null 2>&1 || true
  done
}

# Runtimes side by side: amphi, and runwasi's wasmtime shim when PEER_SHIM_DIR has it.
runtimes=("amphi $AMPHI containerd-shim-amphi-v1")
if [ -n "${PEER_SHIM_DIR:-}" ]; then
  [ -x "$PEER_SHIM_DIR/containerd-shim-wasmtime-v1" ] || { echo "bench: $PEER_SHIM_DIR/containerd-shim-wasmtime-v1 missing" >&2; exit 1; }
  ln -sf "$PEER_SHIM_DIR/containerd-shim-wasmtime-v1" "$CD_DIR/bin/containerd-shim-wasmtime-v1"
  runtimes+=("runwasi io.containerd.wasmtime.v1 containerd-shim-wasmtime-v1")
fi

echo "== memory: 1 then $((extra + 1)) sleeping wasm containers in one pod (sandbox-id annotation)"
: > "$out/memory.txt"
for r in "${runtimes[@]}"; do
  read -r rname rt rbin <<<"$r"
  pod="io.kubernetes.cri.sandbox-id=mem-$rname"
  ctrx run -d --runtime "$rt" --annotation "$pod" "$WIMG" "mem-$rname-0" /sleeper.wasm 1000000 >/dev/null
  # A sleeping process gives back its idle memory within ~2 s (amphi's idle watcher): measure
  # the steady state, not the start-up.
  sleep 4
  read -r pss1 n1 _ < <(pss_of "$rbin")
  ids=("mem-$rname-0")
  for i in $(seq 1 "$extra"); do
    ctrx run -d --runtime "$rt" --annotation "$pod" "$WIMG" "mem-$rname-$i" /sleeper.wasm 1000000 >/dev/null
    ids+=("mem-$rname-$i")
  done
  sleep 4
  read -r pssn nn shimsn < <(pss_of "$rbin")
  running=$(ctrx task ls | awk '$3 == "RUNNING"' | grep -c "^mem-$rname-" || true)
  echo "  $rname: 1 container ${pss1} KiB over $n1 processes; $((extra + 1)) ($running running) ${pssn} KiB over $nn processes, $shimsn shim(s)"
  echo "$rname $pss1 $pssn" >> "$out/memory.txt"
  remove_all "${ids[@]}"
done

# wasi:http: the same component for every runtime (runwasi's hello_wasi_http.wasm when
# PEER_HTTP_WASM names it, else http-hello), --net-host, wrk on loopback, two rounds.
http_wasm=${PEER_HTTP_WASM:-examples/wasm/out/http-hello.wasm}
HIMG=docker.io/amphi/wasm-bench-http:bench
python3 tests/scripts/mkimage.py rootfs "$CD_DIR/http.tar" "$HIMG" --file "$http_wasm:/http.wasm"
ctrx images import "$CD_DIR/http.tar" >/dev/null
wait_http() {
  local _
  for _ in $(seq 1 200); do
    curl -fsS --max-time 2 http://127.0.0.1:8080/ >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench: nothing answers on 127.0.0.1:8080 ($1)" >&2; tail -n 30 "$CD_DIR/containerd.log" >&2; return 1
}
wait_port_free() {
  local _
  for _ in $(seq 1 100); do
    curl -fsS --max-time 1 http://127.0.0.1:8080/ >/dev/null 2>&1 || return 0
    sleep 0.1
  done
  echo "bench: 127.0.0.1:8080 still answers after stopping the server" >&2; return 1
}
ceiling=1
[ -x target/release/hyper-hello ] || { ceiling=; echo "bench: warning: no ceiling row: cargo build --release -p amphi-tests --bin hyper-hello" >&2; }
if curl -fsS --max-time 1 http://127.0.0.1:8080/ >/dev/null 2>&1; then
  echo "bench: something already listens on 127.0.0.1:8080" >&2; exit 1
fi
# amphi twice: its defaults (a fresh instance per request, as runwasi) and with
# [wasm.http] instance_reuse (one instance serves many requests; opt-in, see README).
http_runtimes=("${runtimes[@]}")
http_runtimes+=("amphi-reuse $AMPHI containerd-shim-amphi-v1 --annotation io.amphi.wasm.http.instance_reuse=1000")
# CPU time (ns) of the cgroup that process $1 is in: every process of the container, whichever
# runtime put them there (cgroup v1 cpuacct, or v2 cpu.stat).
cgroup_cpu_ns() {
  local rel
  rel=$(awk -F: '$2 ~ /(^|,)cpuacct(,|$)/ {print $3}' "/proc/$1/cgroup")
  if [ -n "$rel" ] && [ -r "/sys/fs/cgroup/cpuacct$rel/cpuacct.usage" ]; then
    cat "/sys/fs/cgroup/cpuacct$rel/cpuacct.usage"
    return
  fi
  rel=$(awk -F: '$1 == "0" {print $3}' "/proc/$1/cgroup")
  awk '/^usage_usec/ {print $2 * 1000}' "/sys/fs/cgroup$rel/cpu.stat" 2>/dev/null || echo 0
}
: > "$out/http-cpu.txt"
echo "== wasi:http $(basename "$http_wasm"): wrk -t2 -c50 -d$wrk_dur --latency, --net-host, 2 rounds, load average $(cut -d" " -f1-3 /proc/loadavg)"
: > "$out/http-pss.txt"
for round in 1 2; do
  for r in "${http_runtimes[@]}"; do
    read -r rname rt rbin ropts <<<"$r"
    id="http-$rname-$round"
    # shellcheck disable=SC2086 # ropts: extra ctr options, split on purpose
    ctrx run -d --net-host --runtime "$rt" ${ropts:-} "$HIMG" "$id" /http.wasm >/dev/null
    wait_http "$rname"
    # Idle: after the quiet time amphi's runner waits before trimming (see the memory rows).
    sleep 4
    read -r idle _ _ < <(pss_of "$rbin")
    tpid=$(ctrx task ls | awk -v id="$id" '$1 == id {print $2}')
    cpu0=$(cgroup_cpu_ns "$tpid")
    wrk -t2 -c50 -d"$wrk_dur" --latency http://127.0.0.1:8080/ > "$out/wrk-$rname-$round.txt"
    cpu1=$(cgroup_cpu_ns "$tpid")
    read -r loaded _ _ < <(pss_of "$rbin")
    echo "$rname $round $idle $loaded" >> "$out/http-pss.txt"
    echo "$rname $round $((cpu1 - cpu0))" >> "$out/http-cpu.txt"
    echo "  round $round $rname: $(grep Requests/sec "$out/wrk-$rname-$round.txt")"
    remove_all "$id"
    wait_port_free
  done
  [ -n "$ceiling" ] || continue
  target/release/hyper-hello 2>/dev/null &
  hpid=$!
  wait_http hyper
  wrk -t2 -c50 -d"$wrk_dur" --latency http://127.0.0.1:8080/ > "$out/wrk-hyper-$round.txt"
  echo "  round $round hyper: $(grep Requests/sec "$out/wrk-hyper-$round.txt")"
  kill "$hpid"; wait "$hpid" 2>/dev/null || true
  wait_port_free
done

python3 - "$out" "$extra" <<'PY'
import json, os, re, sys
out, extra = sys.argv[1], int(sys.argv[2])
start = {r["command"]: r for r in json.load(open(os.path.join(out, "start.json")))["results"]}
miss, hit, nat = (start[k] for k in ("wasm-cache-miss", "wasm-cache-hit", "native-true"))
mem = {l.split()[0]: (int(l.split()[1]), int(l.split()[2])) for l in open(os.path.join(out, "memory.txt"))}
hp = {}
for l in open(os.path.join(out, "http-pss.txt")):
    n, rnd, idle, loaded = l.split()
    hp.setdefault(n, []).append((int(idle), int(loaded)))
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
def wrk(name):
    best = None
    for rnd in (1, 2):
        p = os.path.join(out, f"wrk-{name}-{rnd}.txt")
        if not os.path.exists(p):
            continue
        t = open(p).read()
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
        lat = {q: ms(v, u) for q, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)}
        errs = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t)
        r = {"rps": rps, "p50": lat.get("50"), "p99": lat.get("99"), "non2xx": int(errs.group(1)) if errs else 0}
        if best is None or r["rps"] > best["rps"]:
            best = r
    return best
http = {n: wrk(n) for n in ("amphi", "amphi-reuse", "runwasi", "hyper")}
met = lambda ok: "MET" if ok else "NOT MET"
ratio_hit = hit["median"] / nat["median"]
rows = [
    ("ctr run --rm, median (ms)", ""),
    ("  native busybox true", f"{nat['median']*1000:8.1f}   1.00x"),
    ("  hello.wasm cache hit", f"{hit['median']*1000:8.1f}   {ratio_hit:.2f}x   goal <= 1.1x: {met(ratio_hit <= 1.1)}"),
    ("  hello.wasm cache miss", f"{miss['median']*1000:8.1f}   {miss['median']/nat['median']:.2f}x"),
] + ([
    ("  hello.wasm layer, cache hit", f"{start['wasm-layer-hit']['median']*1000:8.1f}   {start['wasm-layer-hit']['median']/nat['median']:.2f}x"),
] if "wasm-layer-hit" in start else [])
rows.append(("Pss, shim + helpers + task (KiB)", ""))
for n, (one, many) in mem.items():
    per = (many - one) / extra
    rows.append((f"  {n}: 1 sleeping wasm container", f"{one:8d}"))
    rows.append((f"  {n}: each extra in the pod", f"{per:8.0f}   ({per/1024:.2f} MiB)" + (f"   goal <= 0.6 MB: {met(per * 1024 <= 600_000)}" if n == "amphi" else "")))
if "runwasi" in mem:
    r = mem["amphi"][0] / mem["runwasi"][0]
    rows.append(("  amphi / runwasi, 1 container", f"{r:8.2f}x   goal <= 0.33x: {met(r <= 1/3)}"))
for n, v in hp.items():
    idle = min(i for i, _ in v); after = max(a for _, a in v)
    rows.append((f"  {n}: idle wasi:http container", f"{idle:8d}   after the load run: {after}"))
# CPU per request: the container cgroup's CPU time over wrk's request count, the steadiest
# figure on a shared machine (the best round).
for l in open(os.path.join(out, "http-cpu.txt")):
    n, rnd, ns = l.split()
    p = os.path.join(out, f"wrk-{n}-{rnd}.txt")
    reqs = int(re.search(r"(\d+) requests in", open(p).read()).group(1))
    if http.get(n) and int(ns) > 0 and reqs:
        us = int(ns) / 1000 / reqs
        http[n]["cpu_us"] = min(http[n].get("cpu_us", us), us)
rows.append(("wasi:http (wrk -t2 -c50, best of 2)", "      req/s     p50 ms    p99 ms   cpu us/req"))
for n, r in http.items():
    if r:
        cpu = f"{r['cpu_us']:12.1f}" if "cpu_us" in r else ""
        rows.append((f"  {n}", f"{r['rps']:11.0f} {r['p50'] or float('nan'):10.2f} {r['p99'] or float('nan'):9.2f}" + cpu + (f"   non-2xx: {r['non2xx']}" if r['non2xx'] else "")))
w, h = http.get("runwasi"), http.get("hyper")
for n in ("amphi", "amphi-reuse"):
    a = http.get(n)
    if not a:
        continue
    if w:
        rows.append((f"  {n} / runwasi req/s", f"{a['rps']/w['rps']:8.2f}x   goal >= 2x: {met(a['rps'] >= 2 * w['rps'])}"))
        rows.append((f"  {n} / runwasi p99", f"{a['p99']/w['p99']:8.2f}x   goal <= 0.5x: {met(a['p99'] <= 0.5 * w['p99'])}"))
    if h:
        rows.append((f"  {n} / plain hyper req/s", f"{a['rps']/h['rps']:8.2f}x   goal >= 0.5x: {met(a['rps'] >= 0.5 * h['rps'])}"))
text = "\n".join(f"{x:<40}{y}" for x, y in rows)
print("\n" + text)
open(os.path.join(out, "table.txt"), "w").write(text + "\n")
json.dump({"start_median_s": {"native": nat["median"], "hit": hit["median"], "miss": miss["median"]},
           "pss_kib": {n: {"one": o, "with_extra": m, "extra": extra} for n, (o, m) in mem.items()},
           "http_pss_kib": hp, "http": http}, open(os.path.join(out, "summary.json"), "w"), indent=2)
PY
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg) (numbers are noisy on a busy machine)"
echo "results in $out/"
