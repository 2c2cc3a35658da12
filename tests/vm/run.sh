#!/usr/bin/env bash
# Boots the cgroup v2 test guest once (QEMU, TCG: KVM does not work nested here) and waits for
# it to power off. RUN_DIR must hold payload/ (guest-tests.sh, bin/, images/); the guest writes
# out/ there (results, guest.log, daemon logs) and the serial console goes to RUN_DIR/console.log.
#   tests/vm/run.sh RUN_DIR [TIMEOUT_SECONDS]       (default 540)
# Env: AMPHI_VM_CACHE (default .cache/vm, built by tests/vm/build.sh), AMPHI_VM_SMP (2),
#      AMPHI_VM_MEM (2048, MiB).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
run=${1:?usage: run.sh RUN_DIR [TIMEOUT_SECONDS]}
timeout_s=${2:-540}
cache=$("$here/build.sh" --print-dir)
die() { echo "vm-run: ERROR: $*" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (scripts/setup.sh installs qemu-system-x86)"
for f in vmlinuz initrd.cpio sys/usr/bin/containerd; do
  [ -e "$cache/$f" ] || die "$cache/$f missing: run tests/vm/build.sh"
done
[ -f "$run/payload/guest-tests.sh" ] || die "$run/payload/guest-tests.sh missing"
mkdir -p "$run/out"
# containerd's root on a real block device (ext4), so the io controller has something to count.
rm -f "$run/disk.img"
truncate -s 2G "$run/disk.img"
mkfs.ext4 -q -F -O ^metadata_csum "$run/disk.img"

# `timeout` ends QEMU if the guest hangs; the caller then reads console.log and out/.
set +e
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
  -accel tcg,thread=multi -cpu max -smp "${AMPHI_VM_SMP:-2}" -m "${AMPHI_VM_MEM:-2048}" \
  -machine q35 -nodefaults -no-user-config -nographic -no-reboot \
  -serial "file:$run/console.log" -monitor none \
  -kernel "$cache/vmlinuz" -initrd "$cache/initrd.cpio" \
  -append "console=ttyS0 panic=-1 quiet loglevel=4 systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all swapaccount=1 rdinit=/init" \
  -virtfs "local,path=$cache/sys,mount_tag=sys,security_model=none,readonly=on,multidevs=remap" \
  -virtfs "local,path=$run,mount_tag=run,security_model=none,multidevs=remap" \
  -drive "file=$run/disk.img,format=raw,if=virtio,cache=unsafe" 2>"$run/qemu.stderr"
rc=$?
set -e
rm -f "$run/disk.img"
if [ $rc = 124 ] || [ $rc = 137 ]; then
  die "the guest did not power off within ${timeout_s}s (console: $run/console.log)"
fi
[ $rc = 0 ] || die "qemu exited $rc: $(tail -5 "$run/qemu.stderr")"
