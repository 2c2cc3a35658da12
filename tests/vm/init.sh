#!/bin/sh
# /init of the cgroup v2 test guest (tests/vm/build.sh puts it in the initramfs).
# Stage 1 copies the initramfs into a tmpfs and switch_roots there: container runtimes
# pivot_root, which the initial ramfs refuses. Stage 2 loads the modules, mounts the 9p
# shares (sys: Debian's containerd/runc/libc tree, read-only; run: this run's payload and
# output), only cgroup2 at /sys/fs/cgroup, the ext4 disk for containerd's root, runs
# /mnt/run/payload/guest-tests.sh and powers off. Its result is in /mnt/run/out.
PATH=/bin
if [ "$1" != stage2 ]; then
  /bin/busybox mkdir -p /proc /newroot
  /bin/busybox mount -t tmpfs -o mode=0755 root /newroot
  for d in bin init modules lib lib64 usr sbin etc; do
    /bin/busybox cp -a "/$d" /newroot/
  done
  /bin/busybox mkdir -p /newroot/dev /newroot/proc /newroot/sys /newroot/run /newroot/tmp \
    /newroot/mnt/sys /newroot/mnt/run /newroot/var/lib /newroot/root
  exec /bin/busybox switch_root /newroot /init stage2
fi

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
echo "init: loading modules"
while read -r m; do
  insmod "/modules/$m" || echo "init: insmod $m failed"
done < /modules/order
opts=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$opts,ro,cache=loose" sys /mnt/sys || echo "init: 9p share sys failed"
mount -t 9p -o "$opts" run /mnt/run || echo "init: 9p share run failed"
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || echo "init: cgroup2 failed"
mkdir -p /var/lib/containerd
n=0
while [ ! -b /dev/vda ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
mount -t ext4 /dev/vda /var/lib/containerd || echo "init: no /dev/vda for containerd's root"
hostname amphi-vm
ip link set lo up
echo "root:x:0:0:root:/root:/bin/sh" > /etc/passwd
echo "root:x:0:" > /etc/group
mkdir -p /mnt/run/out
echo "init: up after $(cut -d' ' -f1 /proc/uptime) s"
if [ -f /mnt/run/payload/guest-tests.sh ]; then
  # Its own session and process group: the leak check tells its processes from the others.
  setsid sh /mnt/run/payload/guest-tests.sh > /mnt/run/out/guest.log 2>&1
  echo "init: guest-tests.sh exited $? after $(cut -d' ' -f1 /proc/uptime) s"
else
  echo "init: no /mnt/run/payload/guest-tests.sh"
fi
sync
poweroff -f
