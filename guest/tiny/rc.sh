#!/bin/sh
# vmkit tiny image: early boot (run once by init before anything else).
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
# Modules are listed in dependency order at image build time.
while read -r module; do
  insmod "/lib/modules/$module" || echo "vmkit: insmod $module failed"
done < /etc/vmkit/modules
ip link set lo up
echo "vmkit: tiny image up"
