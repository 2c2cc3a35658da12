#!/usr/bin/env bash
# Builds what the cgroup v2 test guest boots (DESIGN.md "Pure cgroup v2 in a QEMU guest"),
# under .cache/vm/ of the workspace, from Debian packages only:
#   vmlinuz      Debian 12's kernel (the image package linux-image-amd64 depends on), extracted
#                with dpkg-deb -x: the host never installs or boots it
#   initrd.cpio  busybox-static, tests/vm/init.sh as /init, and the kernel modules the guest
#                needs before anything else (virtio-pci, 9p, virtio-blk, ext4, overlay)
#   sys/         containerd, runc, busybox-static, libc6, libseccomp2, libgcc-s1 extracted from
#                their .debs: the guest's /usr and /lib, shared read-only over 9p
# Idempotent: a stamp of this script, init.sh and the package versions skips a rebuild.
# Needs apt-get (download only), dpkg-deb, python3, busybox.
#   tests/vm/build.sh [--print-dir]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out="${AMPHI_VM_CACHE:-$top/.cache/vm}"
log() { echo "vm-build: $*" >&2; }
die() { echo "vm-build: ERROR: $*" >&2; exit 1; }
[ "${1:-}" = --print-dir ] && { echo "$out"; exit 0; }

for t in apt-get apt-cache dpkg-deb python3 busybox; do
  command -v "$t" >/dev/null 2>&1 || die "$t not found (scripts/setup.sh installs what the VM test needs)"
done

# The kernel image package the metapackage points at, e.g. linux-image-6.1.0-57-amd64.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
if [ -z "$kpkg" ]; then
  apt-get update -qq
  kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
fi
[ -n "$kpkg" ] || die "cannot tell which kernel image package linux-image-amd64 depends on"
sys_pkgs=(containerd runc busybox-static libc6 libseccomp2 libgcc-s1)
versions="$kpkg"
for p in "${sys_pkgs[@]}"; do
  versions+=" $p=$(apt-cache policy "$p" | awk '/Candidate:/ { print $2 }')"
done
stamp=$(cat "$0" "$here/init.sh" | sha256sum | cut -c1-16)-$(echo "$versions" | sha256sum | cut -c1-16)
if [ -f "$out/stamp" ] && [ "$(cat "$out/stamp")" = "$stamp" ] \
   && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.cpio" ] && [ -x "$out/sys/usr/bin/containerd" ]; then
  log "up to date ($out)"
  exit 0
fi

log "building $out ($versions)"
mkdir -p "$out/debs"
rm -rf "$out/sys" "$out/initrd" "$out/kernel" "$out/stamp"
(
  cd "$out/debs"
  rm -f ./*.deb
  apt-get download -q -o APT::Sandbox::User=root "$kpkg" "${sys_pkgs[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq; apt-get download -q -o APT::Sandbox::User=root "$kpkg" "${sys_pkgs[@]}" >/dev/null; }
)

mkdir -p "$out/sys" "$out/kernel"
for p in "${sys_pkgs[@]}"; do
  deb=$(ls "$out/debs/${p}_"*.deb 2>/dev/null | head -n1)
  [ -n "$deb" ] || die "no .deb of $p downloaded"
  dpkg-deb -x "$deb" "$out/sys"
done
kdeb=$(ls "$out/debs/${kpkg}_"*.deb | head -n1)
dpkg-deb -x "$kdeb" "$out/kernel"
cp "$out/kernel"/boot/vmlinuz-* "$out/vmlinuz"
kver=$(basename "$out/kernel"/lib/modules/*)

# initramfs: busybox, /init, the modules in load order (dependencies first, read from each
# module's .modinfo "depends=" since there is no depmod here).
ird="$out/initrd"
mkdir -p "$ird"/{bin,dev,proc,sys,run,tmp,mnt/sys,mnt/run,var/lib,etc,modules}
cp "$(command -v busybox)" "$ird/bin/busybox"
ln -s busybox "$ird/bin/sh"
install -m 0755 "$here/init.sh" "$ird/init"
python3 - "$out/kernel/lib/modules/$kver" "$ird/modules" <<'PY'
import os, re, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
mods = {}
for root, _, files in os.walk(os.path.join(src, "kernel")):
    for f in files:
        if f.endswith(".ko"):
            mods[f[:-3].replace("-", "_")] = os.path.join(root, f)
def deps(m):
    data = open(mods[m], "rb").read()
    r = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    return [d.decode().replace("-", "_") for d in r.group(1).split(b",") if d] if r else []
order = []
def visit(m):
    if m not in mods:
        sys.exit(f"module {m} not in {src}")
    if m in order:
        return
    for d in deps(m):
        visit(d)
    order.append(m)
for m in ["virtio_pci", "9pnet_virtio", "9p", "virtio_blk", "crc32c_generic", "ext4", "overlay"]:
    visit(m)
with open(os.path.join(dst, "order"), "w") as f:
    for m in order:
        shutil.copy(mods[m], os.path.join(dst, m + ".ko"))
        f.write(m + ".ko\n")
PY
# The guest's /usr, /lib and /lib64 are the 9p share of sys/ (mounted by init at /mnt/sys).
for d in usr lib lib64 sbin; do ln -s "mnt/sys/$d" "$ird/$d"; done
[ -e "$out/sys/sbin" ] || ln -s usr/sbin "$out/sys/sbin"
[ -e "$out/sys/lib64" ] || die "libc6 has no /lib64 (no dynamic loader)"
(cd "$ird" && find . | busybox cpio -o -H newc 2>/dev/null) > "$out/initrd.cpio.tmp"
mv "$out/initrd.cpio.tmp" "$out/initrd.cpio"
rm -rf "$out/kernel"
echo "$stamp" > "$out/stamp"
log "done: $(du -sh "$out/sys" | cut -f1) sys, $(du -h "$out/initrd.cpio" | cut -f1) initrd"
