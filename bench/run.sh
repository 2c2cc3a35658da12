#!/usr/bin/env bash
# Side-by-side bench of io.containerd.amphi.v1 and io.containerd.runc.v2 on one private
# containerd:
#   1. start-to-exit: hyperfine of `ctr run --rm --runtime R busybox true` (warmup, N runs each)
#   2. shim memory: one `sleep 1000` container per runtime; Pss (smaps_rollup) of its shim
#      process(es) — runc: containerd-shim-runc-v2; amphi: the shim and its spawner — with the
#      container's own processes reported separately.
# Prints a table with amphi/runc ratios against the goals (start median <= 0.6x runc, shim Pss
# <= 0.5x runc) and writes target/bench/{start.json,start.md,memory.txt,summary.json} (BENCH_OUT overrides).
#   sudo bench/run.sh
# Env: BENCH_RUNS (default 30), BENCH_WARMUP (default 5),
#      BENCH_CONTAINERD=1.6|1.7|2.1 (default 1.6, Debian's /usr/bin/containerd).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
. bench/lib-bench.sh
bench_preflight
runs=${BENCH_RUNS:-30}
warmup=${BENCH_WARMUP:-5}
bench_containerd_bindir "$top"

AMPHI_TOP=$top
. scripts/lib-containerd.sh
trap cd_stop EXIT
trap 'exit 130' INT TERM
cd_start "$bindir"
import_busybox
IMG=docker.io/amphi/busybox:e2e
AMPHI=io.containerd.amphi.v1
RUNC=io.containerd.runc.v2
out=${BENCH_OUT:-$top/target/bench}
mkdir -p "$out"

# Sanity: both runtimes work before timing them.
for rt in $AMPHI $RUNC; do
  ctrx run --rm --runtime "$rt" "$IMG" bench-check true || { echo "bench: $rt cannot run a container; log: $CD_DIR/containerd.log" >&2; tail -n 30 "$CD_DIR/containerd.log" >&2; exit 1; }
done

ctr_cmd="$CD_BIN/ctr --address $CD_SOCK --namespace $CD_NS run --rm"
echo "== start-to-exit: $runs runs each (warmup $warmup), containerd $("$bindir/containerd" --version | awk '{print $3}')"
hyperfine -N --warmup "$warmup" --runs "$runs" \
  --export-json "$out/start.json" --export-markdown "$out/start.md" \
  -n amphi "$ctr_cmd --runtime $AMPHI $IMG bench-amphi true" \
  -n runc "$ctr_cmd --runtime $RUNC $IMG bench-runc true"

echo "== shim memory"
ctrx run -d --runtime "$AMPHI" "$IMG" mem-amphi sleep 1000 >/dev/null
ctrx run -d --runtime "$RUNC" "$IMG" mem-runc sleep 1000 >/dev/null
sleep 2   # let both shims settle

ctrx task ls > "$CD_DIR/tasks.txt"
python3 - "$CD_SOCK" "$CD_DIR" "$out" "$CD_DIR/tasks.txt" <<'PY'
import json, os, sys
sock, cddir, out, tasks_file = sys.argv[1:5]
tasks = {}
for line in open(tasks_file).read().splitlines()[1:]:
    f = line.split()
    if len(f) >= 3:
        tasks[f[0]] = int(f[1])

def procs():
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    st = fh.read()
                ppid = int(st[st.rfind(")") + 2:].split()[1])
                with open(f"/proc/{d}/cmdline", "rb") as fh:
                    argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
                try:
                    with open(f"/proc/{d}/environ", "rb") as fh:
                        env = fh.read().decode(errors="replace")
                except OSError:
                    env = ""
                yield int(d), ppid, argv, env
            except (OSError, ValueError, IndexError):
                pass

def pss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for l in fh:
                if l.startswith("Pss:"):
                    return int(l.split()[1])
    except OSError:
        pass
    return 0

def descendants(root, ps):
    out, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        for pid, ppid, _, _ in ps:
            if ppid == p and pid not in out:
                out.add(pid); frontier.append(pid)
    return out

ps = list(procs())
res = {}
for rt, shim, cid in [("amphi", "containerd-shim-amphi-v1", "mem-amphi"), ("runc", "containerd-shim-runc-v2", "mem-runc")]:
    container = descendants(tasks[cid], ps) if cid in tasks else set()
    shims = [pid for pid, _, argv, env in ps
             if argv and os.path.basename(argv[0]) == shim and (sock in " ".join(argv) or cddir in env)
             and pid not in container]
    res[rt] = {"shim_pids": shims, "shim_pss_kib": sum(pss(p) for p in shims),
               "container_pids": sorted(container), "container_pss_kib": sum(pss(p) for p in container)}

with open(os.path.join(out, "start.json")) as fh:
    start = {r["command"]: r for r in json.load(fh)["results"]}
a_med, r_med = start["amphi"]["median"], start["runc"]["median"]
a_pss, r_pss = res["amphi"]["shim_pss_kib"], res["runc"]["shim_pss_kib"]
def ratio(a, b): return a / b if b else float("nan")
rows = [
    ("start-to-exit median (ms)", a_med * 1000, r_med * 1000, ratio(a_med, r_med), 0.6),
    ("start-to-exit mean (ms)", start["amphi"]["mean"] * 1000, start["runc"]["mean"] * 1000,
     ratio(start["amphi"]["mean"], start["runc"]["mean"]), None),
    ("shim Pss (KiB)", a_pss, r_pss, ratio(a_pss, r_pss), 0.5),
    ("container Pss (KiB)", res["amphi"]["container_pss_kib"], res["runc"]["container_pss_kib"],
     ratio(res["amphi"]["container_pss_kib"], res["runc"]["container_pss_kib"]), None),
]
lines = [f"{'metric':<28}{'amphi':>12}{'runc':>12}{'amphi/runc':>12}  goal",
         "-" * 72]
for name, a, r, q, goal in rows:
    verdict = "" if goal is None else (f"<= {goal}  " + ("MET" if q <= goal else "NOT MET"))
    lines.append(f"{name:<28}{a:>12.1f}{r:>12.1f}{q:>12.2f}  {verdict}")
lines.append("")
for rt in ("amphi", "runc"):
    lines.append(f"{rt}: shim pids {res[rt]['shim_pids']}, container pids {res[rt]['container_pids']}")
text = "\n".join(lines)
print(text)
with open(os.path.join(out, "memory.txt"), "w") as fh:
    fh.write(text + "\n")
with open(os.path.join(out, "summary.json"), "w") as fh:
    json.dump({"start_median_s": {"amphi": a_med, "runc": r_med}, "memory": res}, fh, indent=2)
PY
echo "results in $out/"
