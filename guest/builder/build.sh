#!/bin/sh
# Runs as root inside vmkit's builder VM (the plain Debian image). Applies a recipe to the target
# disk (a copy-on-write copy of the base image's root disk, serial "vmkit-target") from the
# transfer disk (serial "vmkit-transfer": debs/, files/, files.sh, run.sh), chrooted into the
# target, then unmounts it so that every write has reached the disk before the host copies it.
set -eu

disk_with_serial() {
  for block in /sys/block/vd*; do
    if [ "$(cat "$block/serial" 2>/dev/null)" = "$1" ]; then
      echo "/dev/${block##*/}"
      return 0
    fi
  done
  echo "builder: no disk with serial $1" >&2
  exit 1
}

target=/mnt/vmkit-target
transfer=/mnt/vmkit-transfer
mkdir -p "$target" "$transfer"
transfer_disk=$(disk_with_serial vmkit-transfer)
target_disk=$(disk_with_serial vmkit-target)
root_disk=$(awk '$2 == "/" { print $1 }' /proc/mounts)
echo "builder: target $target_disk, transfer $transfer_disk, root $root_disk"
if [ "$root_disk" = "$target_disk" ] || [ "$root_disk" = "$transfer_disk" ]; then
  echo "builder: the builder booted from $root_disk, a disk it was to build on" >&2
  exit 1
fi
mount -o ro "$transfer_disk" "$transfer"
mount "$target_disk" "$target"
mount -t proc proc "$target/proc"
mount -t sysfs sysfs "$target/sys"
mount --bind /dev "$target/dev"
work="$target/tmp/vmkit-recipe"
rm -rf "$work"
cp -a "$transfer/." "$work"

in_target() {
  chroot "$target" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"
}

if ls "$work/debs/" | grep -q '\.deb$'; then
  echo "builder: installing $(ls "$work/debs" | grep -c '\.deb$') package(s)"
  in_target sh -c 'dpkg --install --force-confold /tmp/vmkit-recipe/debs/*.deb'
fi
echo "builder: writing files"
in_target sh /tmp/vmkit-recipe/files.sh
echo "builder: running the recipe's run steps"
in_target sh /tmp/vmkit-recipe/run.sh

rm -rf "$work"
umount "$target/dev" "$target/sys" "$target/proc"
umount "$target"
sync
echo "builder: done"
