#!/bin/sh
# The cgroup v2 cases, run by the guest's /init (tests/vm/init.sh) under busybox sh, against
# one private containerd (Debian's 1.6) with amphi and runc. Every native case runs with both
# runtimes (runc validates the check), wasm cases and clone3 with amphi only. After each case
# the namespace is cleaned through ctr and a leak check compares the guest with the state
# before the case: no new mount, no process left (shims, spawners, container processes), no
# cgroup of the case left.
#
# Input: /mnt/run/payload/{bin/,images/}. Output: /mnt/run/out/results, one line per case:
#   RESULT <case> <amphi|runc|compare> <PASS|FAIL> <seconds> [reason]
# and out/cases/<case>-<runtime>.log, out/containerd.log.
P=/mnt/run/payload
O=/mnt/run/out
T=/tmp/vmtest
mkdir -p "$T" "$O/cases" "$O/cmp"
# The payload's binaries on tmpfs: the run share is uncached 9p, and the shim is exec'd twice
# per container.
cp -r "$P/bin" "$T/bin"
export PATH="$T/bin:/usr/sbin:/usr/bin:/bin"
: > "$O/results"
NS=vm
SOCK=/run/containerd/containerd.sock
BB=docker.io/amphi/busybox:e2e
WI=docker.io/amphi/wasm-vm:e2e
MAXU64=18446744073709551615

log() { echo "guest: [$(cut -d' ' -f1 /proc/uptime)] $*"; }
# Every ctr call is bounded: a hang becomes a failed case with its trace, not a lost run.
ctr() { timeout -s KILL 90 ctr --address "$SOCK" -n "$NS" "$@"; }
fail() { echo "FAIL: $*"; exit 1; }
expect() { [ "$1" = "$2" ] || fail "$3: got '$1', want '$2'"; }
# wait_until CMD...: retries for up to a minute (a bounded wait, not a timed assertion).
wait_until() {
  _n=0
  while ! "$@" >/dev/null 2>&1; do
    _n=$((_n + 1))
    [ $_n -ge 300 ] && return 1
    sleep 0.2
  done
}
task_field() { ctr task ls | awk -v id="$1" -v f="$2" '$1 == id { print $f }'; }
task_pid() { task_field "$1" 2; }
task_status_is() { [ "$(task_field "$1" 3)" = "$2" ]; }
# The cgroup v2 directory of a process.
cg_of_pid() { echo "/sys/fs/cgroup$(sed -n 's/^0:://p' "/proc/$1/cgroup")"; }
# The cgroup of a running task; remembered for the leak check.
task_cg() {
  _p=$(task_pid "$1")
  [ -n "$_p" ] && [ "$_p" != 0 ] || fail "no pid for task $1"
  _c=$(cg_of_pid "$_p")
  echo "$_c" >> "$T/cgroups"
  echo "$_c"
}
nprocs() { wc -l < "$1/cgroup.procs" | tr -d ' '; }
nprocs_at_least() { [ "$(nprocs "$1")" -ge "$2" ]; }
v2_limit() { _v=$(cat "$1"); [ "$_v" = max ] && _v=$MAXU64; echo "$_v"; }
# `ctr task metrics --format json` as path=value lines (pids.limit=..., io.usage.0.wbytes=...).
metrics_flat() {
  ctr task metrics --format json "$1" | awk '
    {
      line = $0; sub(/^[ \t]+/, "", line); sub(/,[ \t]*$/, "", line)
      if (line == "") next
      key = ""
      if (line ~ /^"[^"]*": */) { key = line; sub(/^"/, "", key); sub(/".*$/, "", key); sub(/^"[^"]*": */, "", line) }
      if (line == "}" || line == "]") { d--; next }
      if (key == "" && d > 0 && isarr[d]) key = cnt[d]++
      if (line == "{" || line == "[") { d++; name[d] = key; isarr[d] = (line == "["); cnt[d] = 0; next }
      if (line == "{}" || line == "[]") next
      p = ""; for (i = 2; i <= d; i++) p = p name[i] "."
      print p key "=" line
    }'
}
# `ctr run ARGS` in the background, without a deadline of its own (a SIGKILL by `timeout`
# would read as exit 137): its exit code lands in $T/run.rc.
run_bg() {
  rm -f "$T/run.rc"
  ( command ctr --address "$SOCK" -n "$NS" run "$@" > /dev/null; echo $? > "$T/run.rc" ) &
  echo $! >> "$T/bg"
}
# The exit code of the run_bg task after a kill.
run_bg_rc() {
  wait_until [ -s "$T/run.rc" ] || fail "ctr run did not return after the kill (no exit published)"
  cat "$T/run.rc"
}
metrics_table() { ctr task metrics "$1" | awk -v k="$2" '$1 == k { print $2 }'; }

# ---- the daemon ---------------------------------------------------------------------------
# What the CRI plugin copies into a host-network pod.
echo "127.0.0.1 localhost amphi-vm" > /etc/hosts
: > /etc/resolv.conf
mkdir -p /etc/containerd /run/containerd
cat > /etc/containerd/config.toml <<EOF
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/amphi/pause:e2e"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.amphi]
  runtime_type = "io.containerd.amphi.v1"
EOF
containerd --version
containerd --config /etc/containerd/config.toml > "$O/containerd.log" 2>&1 &
wait_until ctr version || { log "containerd did not come up"; tail -50 "$O/containerd.log"; exit 1; }
log "containerd up after $(cut -d' ' -f1 /proc/uptime) s"
for ns in vm k8s.io; do
  for img in busybox pause wasm; do
    command ctr --address "$SOCK" -n "$ns" images import "$P/images/$img.tar" >/dev/null \
      || { log "import $img into $ns failed"; exit 1; }
  done
done
log "images imported after $(cut -d' ' -f1 /proc/uptime) s"

# ---- leak check ---------------------------------------------------------------------------
# This script's process group (init starts it with setsid): its own tools, ctr, vm-cri and
# containerd. Shims, spawners and containers are in groups of their own.
read -r _st < /proc/$$/stat
set -- ${_st##*) }
MYPG=$3
# Userspace processes outside this script's process group (not kernel threads: those are
# kthreadd's children), listed without forking.
user_pids() {
  for d in /proc/[0-9]*; do
    _pid=${d#/proc/}
    [ "$_pid" = $$ ] && continue
    read -r _st < "$d/stat" 2>/dev/null || continue
    _rest=${_st##*) }
    set -- $_rest
    [ "$2" = 2 ] || [ "$_pid" = 2 ] && continue
    [ "$3" = "$MYPG" ] && continue
    echo "$_pid"
  done
}
snapshot() {
  user_pids | sort > "$T/pids.$1"
  awk '{ print $5 }' /proc/self/mountinfo | sort > "$T/mounts.$1"
}
# Lines of $2 that $1 does not have (busybox has no comm).
new_lines() { grep -vxF -f "$1" "$2"; }
describe_pid() { echo "$1 $(tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null)"; }
no_new_pids() {
  user_pids | sort > "$T/pids.after"
  [ -z "$(new_lines "$T/pids.before" "$T/pids.after")" ]
}
# Prints what the case left behind; empty when nothing.
leaks() {
  wait_until no_new_pids
  for p in $(new_lines "$T/pids.before" "$T/pids.after"); do
    [ -d "/proc/$p" ] && echo "process left: $(describe_pid "$p")"
  done
  awk '{ print $5 }' /proc/self/mountinfo | sort > "$T/mounts.after"
  for m in $(new_lines "$T/mounts.before" "$T/mounts.after"); do echo "mount left: $m"; done
  sort -u "$T/cgroups" 2>/dev/null | while read -r c; do
    [ -d "$c" ] && echo "cgroup left: $c"
  done
  for c in $(find /sys/fs/cgroup/vm -mindepth 1 -type d 2>/dev/null) \
           $(find /sys/fs/cgroup/vm-pods -mindepth 2 -type d 2>/dev/null); do
    echo "cgroup left: $c"
  done
}
# Ends what a failed case left running: its background ctr processes, then every task and
# container of both namespaces (the CRI's too, behind its back: the guest is thrown away).
cleanup() {
  for p in $(cat "$T/bg" 2>/dev/null); do kill "$p" 2>/dev/null; done
  : > "$T/bg"
  for ns in vm k8s.io; do
    c() { echo "cleanup: ctr -n $ns $*"; timeout -s KILL 90 ctr --address "$SOCK" -n "$ns" "$@"; }
    for id in $(c task ls -q 2>/dev/null | grep -v '^cleanup:'); do
      c task kill -a -s SIGKILL "$id" 2>&1
      c task delete -f "$id" 2>&1
    done
    for id in $(c container ls -q 2>/dev/null | grep -v '^cleanup:'); do
      c container delete "$id" 2>&1
    done
  done
}

# run_case NAME RUNTIME FUNCTION: the case in a subshell (its `fail` ends only the case), the
# cleanup, the leak check, one RESULT line.
run_case() {
  name=$1 rt=$2 fn=$3
  # payload/only (one case name a line), when present, selects cases: for debugging by hand.
  if [ -f "$P/only" ] && ! grep -qx "$name" "$P/only"; then return; fi
  case $rt in
    amphi) RTN=io.containerd.amphi.v1 ;;
    runc) RTN=io.containerd.runc.v2 ;;
  esac
  ID=$(echo "$name-$rt" | tr _ -)
  export RTN ID rt
  : > "$T/cgroups"
  snapshot before
  t0=$(cut -d' ' -f1 /proc/uptime)
  log "=== $name ($rt)"
  ( set -u -x; $fn ) > "$O/cases/$name-$rt.log" 2>&1
  rc=$?
  cleanup >> "$O/cases/$name-$rt.log" 2>&1
  lk=$(leaks)
  t1=$(cut -d' ' -f1 /proc/uptime)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  if [ $rc = 0 ] && [ -z "$lk" ]; then
    res="PASS"
  elif [ $rc != 0 ]; then
    res="FAIL $secs $(grep '^FAIL:' "$O/cases/$name-$rt.log" | tail -1 | cut -c7-)"
    secs=""
  else
    res="FAIL $secs leak: $(echo "$lk" | tr '\n' ';')"
    secs=""
  fi
  [ -n "$lk" ] && { echo "$lk"; ps -o pid,ppid,pgid,stat,comm,args; } >> "$O/cases/$name-$rt.log"
  echo "RESULT $name $rt $res $secs" | sed 's/ *$//' >> "$O/results"
  log "$(tail -1 "$O/results")"
}
# compare_case NAME: amphi's and runc's recorded outputs of NAME must be the same.
compare_case() {
  if [ -f "$P/only" ] && ! grep -qx "$1" "$P/only"; then return; fi
  if [ ! -s "$O/cmp/$1-amphi" ] || [ ! -s "$O/cmp/$1-runc" ]; then
    echo "RESULT $1 compare FAIL 0 missing output of one runtime" >> "$O/results"
  elif diff -u "$O/cmp/$1-runc" "$O/cmp/$1-amphi" > "$O/cases/$1-compare.log" 2>&1; then
    echo "RESULT $1 compare PASS 0" >> "$O/results"
  else
    echo "RESULT $1 compare FAIL 0 amphi differs from runc: $(grep '^[-+][^-+]' "$O/cases/$1-compare.log" | head -4 | tr '\n' ';')" >> "$O/results"
  fi
  log "$(tail -1 "$O/results")"
}

# ---- native cases (amphi and runc) --------------------------------------------------------
c_run_exit() {
  out=$(ctr run --rm --runtime "$RTN" "$BB" "$ID" sh -c 'echo hello-$((6*7)); exit 3')
  expect "$?" 3 "exit code of ctr run"
  expect "$out" hello-42 "output"
}

c_exec_pause() {
  ctr run -d --runtime "$RTN" "$BB" "$ID" sleep 600 || fail "ctr run -d"
  out=$(ctr task exec --exec-id e1 "$ID" sh -c 'echo in-$(cat /proc/1/comm); exit 5')
  expect "$?" 5 "exit code of the exec"
  expect "$out" in-sleep "output of the exec"
  ctr task exec -d --exec-id e2 "$ID" sleep 500 || fail "exec -d"
  cg=$(task_cg "$ID") || fail "$cg"
  wait_until nprocs_at_least "$cg" 2 || fail "the exec is not in $cg: $(cat "$cg/cgroup.procs")"
  for p in $(cat "$cg/cgroup.procs"); do
    expect "$(cg_of_pid "$p")" "$cg" "cgroup of process $p"
  done
  expect "$cg" "/sys/fs/cgroup/$NS/$ID" "ctr's cgroupsPath /<namespace>/<id>"
  ctr task pause "$ID" || fail "pause"
  expect "$(cat "$cg/cgroup.freeze")" 1 "cgroup.freeze after pause"
  grep -qx "frozen 1" "$cg/cgroup.events" || fail "cgroup.events after pause: $(cat "$cg/cgroup.events")"
  task_status_is "$ID" PAUSED || fail "status after pause: $(task_field "$ID" 3)"
  ctr task resume "$ID" || fail "resume"
  expect "$(cat "$cg/cgroup.freeze")" 0 "cgroup.freeze after resume"
  grep -qx "frozen 0" "$cg/cgroup.events" || fail "cgroup.events after resume: $(cat "$cg/cgroup.events")"
  task_status_is "$ID" RUNNING || fail "status after resume: $(task_field "$ID" 3)"
}

c_kill_all() {
  run_bg --runtime "$RTN" "$BB" "$ID" sh -c 'sleep 600 & sleep 601 & wait'
  wait_until task_status_is "$ID" RUNNING || fail "task not running"
  ctr task exec -d --exec-id e1 "$ID" sleep 602 || fail "exec -d"
  cg=$(task_cg "$ID") || fail "$cg"
  wait_until nprocs_at_least "$cg" 4 || fail "processes in $cg: $(cat "$cg/cgroup.procs")"
  pids=$(cat "$cg/cgroup.procs")
  ctr task kill -a -s SIGKILL "$ID" || fail "kill -a"
  rc=$(run_bg_rc) || fail "$rc"
  expect "$rc" 137 "exit code of the killed init"
  for p in $pids; do
    [ -d "/proc/$p" ] && fail "process $p survived kill -a: $(describe_pid "$p")"
  done
  echo "killed: $pids"
}

c_metrics() {
  ctr run -d --runtime "$RTN" --memory-limit 134217728 "$BB" "$ID" \
    sh -c 'dd if=/dev/zero of=/io.bin bs=1M count=8 oflag=direct 2>/dev/null; exec sleep 600' \
    || fail "ctr run -d"
  pid=$(task_pid "$ID")
  cg=$(task_cg "$ID") || fail "$cg"
  wait_until grep -qx sleep "/proc/$pid/comm" || fail "dd did not finish"
  ctr task metrics "$ID"
  expect "$(metrics_table "$ID" pids.limit)" "$(v2_limit "$cg/pids.max")" "pids.limit"
  expect "$(metrics_table "$ID" pids.limit)" "$MAXU64" "pids.limit without a pids limit"
  expect "$(metrics_table "$ID" memory.usage_limit)" 134217728 "memory.usage_limit"
  expect "$(metrics_table "$ID" memory.swap_limit)" "$(v2_limit "$cg/memory.swap.max")" "memory.swap_limit"
  expect "$(metrics_table "$ID" pids.current)" 1 "pids.current"
  metrics_flat "$ID" > "$T/m"
  cat "$T/m"
  [ "$(sed -n 's/^cpu.usage_usec=//p' "$T/m")" -gt 0 ] || fail "no cpu.usage_usec"
  [ "$(sed -n 's/^memory.usage=//p' "$T/m")" -gt 0 ] || fail "no memory.usage"
  grep -q '^io\.usage\.[0-9]*\.wbytes=' "$T/m" || fail "no io.usage entry (io.stat: $(cat "$cg/io.stat"))"
  awk -F= '/^io\.usage\.[0-9]+\.wbytes=/ && $2 + 0 >= 8388608 { ok = 1 } END { exit !ok }' "$T/m" \
    || fail "io.usage has no device with the 8 MiB written (io.stat: $(cat "$cg/io.stat"))"
  # The limits and the io.stat device list must read the same with either runtime.
  grep -E '^(pids\.limit|memory\.(usage_limit|swap_limit))=' "$T/m" > "$O/cmp/metrics-$rt"
  sed -n 's/^io\.usage\.[0-9]*\.\(major\|minor\)=/\1=/p' "$T/m" >> "$O/cmp/metrics-$rt"
}

c_limits() {
  ctr run -d --runtime "$RTN" --memory-limit 67108864 --cpu-quota 20000 --cpu-period 100000 \
    "$BB" "$ID" sh -c 'while :; do :; done' || fail "ctr run -d"
  cg=$(task_cg "$ID") || fail "$cg"
  expect "$(cat "$cg/memory.max")" 67108864 "memory.max"
  expect "$(cat "$cg/cpu.max")" "20000 100000" "cpu.max"
  # A busy loop under a fifth of a CPU is throttled: the quota is enforced, not only written.
  throttled() { [ "$(awk '$1 == "nr_throttled" { print $2 }' "$cg/cpu.stat")" -gt 0 ]; }
  wait_until throttled || fail "never throttled: $(cat "$cg/cpu.stat")"
  expect "$(metrics_table "$ID" memory.usage_limit)" 67108864 "metrics memory.usage_limit"
  [ "$(metrics_table "$ID" cpu.nr_throttled)" -gt 0 ] || fail "metrics cpu.nr_throttled is 0"
  printf 'memory.max=%s\ncpu.max=%s\n' "$(cat "$cg/memory.max")" "$(cat "$cg/cpu.max")" > "$O/cmp/limits-$rt"
}

c_oom() {
  # The binary itself (no `timeout` in between), so that $! is what `kill` must end.
  command ctr --address "$SOCK" -n "$NS" events > "$T/events" 2>&1 &
  ev=$!
  echo "$ev" >> "$T/bg"
  sleep 0.5
  ctr run -d --runtime "$RTN" --memory-limit 33554432 "$BB" "$ID" \
    dd if=/dev/zero of=/dev/null bs=64M count=1 || fail "ctr run -d"
  # dd may be dead before its pid can be looked up: ctr's cgroupsPath is /<namespace>/<id>
  # (c_exec_pause checks it through /proc), and the cgroup stays until the task is deleted.
  cg=/sys/fs/cgroup/$NS/$ID
  echo "$cg" >> "$T/cgroups"
  [ -d "$cg" ] || fail "no cgroup $cg"
  wait_until task_status_is "$ID" STOPPED || fail "the task did not stop"
  kills=$(awk '$1 == "oom_kill" { print $2 }' "$cg/memory.events")
  [ "${kills:-0}" -ge 1 ] || fail "memory.events: $(cat "$cg/memory.events")"
  got_exit() { grep -q "/tasks/exit.*\"$ID\"" "$T/events"; }
  wait_until got_exit || fail "no /tasks/exit event: $(cat "$T/events")"
  kill "$ev"
  cat "$T/events"
  # ctr 1.6's task delete exits 0 whatever the status: the exit event carries it.
  grep "/tasks/exit.*\"$ID\"" "$T/events" | grep -q '"exit_status":137' \
    || fail "the OOM-killed task did not exit 137: $(grep /tasks/exit "$T/events")"
  ctr task delete "$ID" || fail "task delete"
  oom_line=$(grep -n "/tasks/oom.*\"$ID\"" "$T/events" | head -1 | cut -d: -f1)
  exit_line=$(grep -n "/tasks/exit.*\"$ID\"" "$T/events" | head -1 | cut -d: -f1)
  [ -n "$oom_line" ] || fail "no /tasks/oom event"
  if [ "$rt" = amphi ]; then
    # amphi publishes the OOM before the exit it caused (DESIGN.md "Exit ordering").
    [ "$oom_line" -lt "$exit_line" ] || fail "/tasks/oom (line $oom_line) after /tasks/exit (line $exit_line)"
  fi
}

c_devices() {
  vda=$(stat -c '%t %T' /dev/vda | awk '{ printf "%d %d", "0x" $1, "0x" $2 }')
  probe='exec 2>&1
    head -c 1 /dev/zero | wc -c
    mknod /tmp/mem c 1 1 && echo mknod-ok
    head -c 1 /tmp/mem 2>&1 >/dev/null
    echo open-rc=$?
    mknod /tmp/vda b '"$vda"' && head -c 1 /tmp/vda 2>&1 >/dev/null
    echo block-rc=$?'
  out=$(ctr run --rm --runtime "$RTN" "$BB" "$ID" sh -c "$probe")
  echo "$out"
  echo "$out" | grep -qx 1 || fail "/dev/zero (allowed) not readable: $out"
  echo "$out" | grep -qx mknod-ok || fail "mknod (allowed by the default rules) failed: $out"
  echo "$out" | grep -q "/tmp/mem: Operation not permitted" || fail "opening c 1:1 was not refused with EPERM: $out"
  echo "$out" | grep -qx "open-rc=1" || fail "$out"
  echo "$out" | grep -q "/tmp/vda: Operation not permitted" || fail "opening b 254:0 was not refused with EPERM: $out"
  [ ! -e /sys/fs/cgroup/devices.list ] || fail "a v1 devices controller on a v2 guest"
  echo "$out" | sed 's/^head: //' > "$O/cmp/devices-$rt"
}

PROBE='exec 2>&1
id
grep -E "^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):" /proc/self/status
echo ptmx=$(readlink /dev/ptmx)
ls -A /dev | grep -v -E "^(pts|shm|mqueue)$" | sort | tr "\n" " "; echo
awk "\$2 ~ \"^/(proc|sys|dev)(/|$)\" { print \$2, \$3, \$4 }" /proc/self/mounts | sort
echo 1 > /proc/sys/net/ipv4/ip_forward && echo sysctl-write=$(cat /proc/sys/net/ipv4/ip_forward)
head -c 1 /dev/vda | wc -c'
c_privileged() {
  out=$(ctr run --rm --runtime "$RTN" --privileged "$BB" "$ID" sh -c "$PROBE")
  expect "$?" 0 "exit code of the privileged probe"
  echo "$out"
  echo "$out" | grep -q "CapEff:.000001ffffffffff" || fail "not every capability: $out"
  echo "$out" | grep -q "Seccomp:.0" || fail "a seccomp filter in a privileged container"
  echo "$out" | grep -q "sysctl-write=1" || fail "no writable /proc/sys"
  echo "$out" | grep -q " vda " || fail "/dev/vda (a host device) missing from /dev"
  echo "$out" > "$O/cmp/privileged-$rt"
}

c_cri_pod() {
  wasm=""
  [ "$rt" = amphi ] && wasm=$WI
  timeout -s KILL 300 vm-cri "$SOCK" "$rt" "pod-$rt" "/vm-pods/pod-$rt" "$BB" $wasm > "$T/cri.out" 2>&1
  rc=$?
  cat "$T/cri.out"
  [ $rc = 0 ] || fail "vm-cri exited $rc: $(tail -1 "$T/cri.out")"
}

# ---- amphi only ---------------------------------------------------------------------------
# clone3(CLONE_INTO_CGROUP): the container init is born in its cgroup, never in the
# spawner's. Proof: the spawner of a running shim is moved into a cgroup whose pids.max is 1
# (itself), where fork() fails (a control shows it); a second container of that shim still
# starts, because clone3 with CLONE_INTO_CGROUP charges the child to the target cgroup, and
# the jail's pids.events counts no refused fork.
c_clone3() {
  ann=io.containerd.runc.v2.group=clone3
  ctr run -d --runtime "$RTN" --annotation "$ann" "$BB" "$ID-a" sleep 600 || fail "first container"
  init=$(task_pid "$ID-a")
  task_cg "$ID-a" > /dev/null || fail "no cgroup of $ID-a"
  shim=$(awk '{ print $4 }' "/proc/$init/stat")
  spawner=""
  for d in /proc/[0-9]*; do
    [ "$(awk '{ print $4 }' "$d/stat" 2>/dev/null)" = "$shim" ] || continue
    [ "$(cat "$d/comm" 2>/dev/null)" = amphi-spawner ] && spawner=${d#/proc/}
  done
  [ -n "$spawner" ] || fail "no amphi-spawner child of shim $shim"
  home=$(cg_of_pid "$spawner")
  grep -qw pids /sys/fs/cgroup/cgroup.subtree_control || echo +pids > /sys/fs/cgroup/cgroup.subtree_control
  mkdir -p /sys/fs/cgroup/jail /sys/fs/cgroup/jail-control
  echo 1 > /sys/fs/cgroup/jail/pids.max
  echo 1 > /sys/fs/cgroup/jail-control/pids.max
  # Control: a shell in such a cgroup cannot fork.
  sh -c 'echo $$ > /sys/fs/cgroup/jail-control/cgroup.procs; cat /proc/self/stat && echo forked' > "$T/control" 2>&1
  grep -q forked "$T/control" && fail "control: a fork succeeded at pids.max 1"
  expect "$(awk '$1 == "max" { print $2 }' /sys/fs/cgroup/jail-control/pids.events)" 1 "control pids.events max"
  echo "$spawner" > /sys/fs/cgroup/jail/cgroup.procs || fail "moving the spawner"
  ctr run -d --runtime "$RTN" --annotation "$ann" "$BB" "$ID-b" sleep 600
  started=$?
  ctr task exec --exec-id e1 "$ID-b" true
  exec_rc=$?
  refused=$(awk '$1 == "max" { print $2 }' /sys/fs/cgroup/jail/pids.events)
  in_jail=$(cat /sys/fs/cgroup/jail/cgroup.procs | tr '\n' ' ')
  echo "$spawner" > "$home/cgroup.procs"
  rmdir /sys/fs/cgroup/jail /sys/fs/cgroup/jail-control
  expect "$started" 0 "start of a container with the spawner at its pids limit"
  expect "$exec_rc" 0 "exec with the spawner at its pids limit"
  expect "$refused" 0 "forks refused in the spawner's cgroup"
  expect "$in_jail" "$spawner " "processes in the spawner's cgroup"
  b=$(task_pid "$ID-b")
  expect "$(cg_of_pid "$b")" "$(dirname "$(cg_of_pid "$init")")/$ID-b" "cgroup of the second init"
  task_cg "$ID-b" > /dev/null
}

c_wasm_run_exit() {
  out=$(ctr run --rm --runtime "$RTN" "$WI" "$ID" /exit-code.wasm 7)
  expect "$?" 7 "exit code of exit-code.wasm 7"
  expect "$out" "exiting with 7" "output"
}

c_wasm_exec_pause() {
  ctr run -d --runtime "$RTN" "$WI" "$ID" /sleeper.wasm 100000 || fail "ctr run -d"
  cg=$(task_cg "$ID") || fail "$cg"
  out=$(ctr task exec --exec-id e1 "$ID" /exit-code.wasm 4)
  expect "$?" 4 "exit code of a wasm exec"
  expect "$out" "exiting with 4" "output of a wasm exec"
  ctr task exec --exec-id e2 "$ID" /hello.wasm a b > "$T/out" || fail "hello.wasm exited $?"
  grep -qx "hello from wasm" "$T/out" || fail "hello.wasm printed $(cat "$T/out")"
  grep -qx "arg\[2\]=b" "$T/out" || fail "hello.wasm args: $(cat "$T/out")"
  ctr task pause "$ID" || fail "pause"
  expect "$(cat "$cg/cgroup.freeze")" 1 "cgroup.freeze after pause"
  grep -qx "frozen 1" "$cg/cgroup.events" || fail "cgroup.events: $(cat "$cg/cgroup.events")"
  ctr task resume "$ID" || fail "resume"
  grep -qx "frozen 0" "$cg/cgroup.events" || fail "cgroup.events: $(cat "$cg/cgroup.events")"
  expect "$(metrics_table "$ID" pids.limit)" "$MAXU64" "pids.limit"
  expect "$(metrics_table "$ID" memory.swap_limit)" "$(v2_limit "$cg/memory.swap.max")" "memory.swap_limit"
  [ "$(metrics_table "$ID" memory.usage)" -gt 0 ] || fail "no memory usage"
  [ "$(metrics_table "$ID" cpu.usage_usec)" -gt 0 ] || fail "no cpu usage"
}

c_wasm_kill_limits() {
  run_bg --runtime "$RTN" --memory-limit 268435456 --cpu-quota 20000 --cpu-period 100000 \
    "$WI" "$ID" /spin.wat
  wait_until task_status_is "$ID" RUNNING || fail "task not running"
  cg=$(task_cg "$ID") || fail "$cg"
  expect "$(cat "$cg/memory.max")" 268435456 "memory.max"
  expect "$(cat "$cg/cpu.max")" "20000 100000" "cpu.max"
  throttled() { [ "$(awk '$1 == "nr_throttled" { print $2 }' "$cg/cpu.stat")" -gt 0 ]; }
  wait_until throttled || fail "the spinning module was never throttled: $(cat "$cg/cpu.stat")"
  ctr task kill -a -s SIGKILL "$ID" || fail "kill -a"
  rc=$(run_bg_rc) || fail "$rc"
  expect "$rc" 137 "exit code of the killed wasm task"
}

# ---- the set ------------------------------------------------------------------------------
for c in run_exit exec_pause kill_all metrics limits oom devices privileged cri_pod; do
  for r in amphi runc; do
    run_case "$c" "$r" "c_$c"
  done
done
for c in metrics limits devices privileged; do compare_case "$c"; done
run_case clone3_into_cgroup amphi c_clone3
for c in wasm_run_exit wasm_exec_pause wasm_kill_limits; do
  run_case "$c" amphi "c_$c"
done
kill %1 2>/dev/null
log "done after $(cut -d' ' -f1 /proc/uptime) s: $(grep -c ' PASS' "$O/results") passed, $(grep -c ' FAIL' "$O/results") failed"
echo END >> "$O/results"
