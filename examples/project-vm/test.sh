#!/bin/sh
# Root-only tests for vmkit's project-VM example: a tmpfs mount, a loop device with an ext2
# filesystem made on it. They format and mount things, so they refuse to run outside a vmkit
# guest (one with vmkit's agent port). Run them with: vmkit up && vmkit test
# An argument picks one test: tmpfs or loop.
set -u
if ! grep -qs '^vmkit.shell$' /sys/class/virtio-ports/*/name; then
  echo "not a vmkit VM: these tests mount and format devices; run them with vmkit test" >&2
  exit 3
fi
failures=0
check() {
  name=$1
  shift
  if out=$("$@" 2>&1); then
    echo "ok - $name"
  else
    echo "not ok - $name"
    echo "$out" | sed 's/^/    /'
    failures=$((failures + 1))
  fi
}

test_tmpfs() {
  set -e
  dir=$(mktemp -d)
  mount -t tmpfs -o size=4m tmpfs "$dir"
  echo hello > "$dir/file"
  grep -q " $dir tmpfs " /proc/mounts
  [ "$(cat "$dir/file")" = hello ]
  umount "$dir"
  [ ! -e "$dir/file" ]
  rmdir "$dir"
}

test_loop() {
  set -e
  image=$(mktemp)
  dd if=/dev/zero of="$image" bs=1M count=8 2>/dev/null
  dev=$(losetup -f)
  losetup "$dev" "$image"
  mke2fs -q "$dev"
  dir=$(mktemp -d)
  mount -t ext2 "$dev" "$dir"
  echo data > "$dir/on-ext2"
  sync
  umount "$dir"
  mount -t ext2 -o ro "$dev" "$dir"
  [ "$(cat "$dir/on-ext2")" = data ]
  umount "$dir"
  losetup -d "$dev"
  rm -f "$image"
  rmdir "$dir"
}

case ${1:-all} in
  tmpfs) check "tmpfs mount" test_tmpfs ;;
  loop) check "ext2 on a loop device" test_loop ;;
  all)
    check "running as root" test "$(id -u)" = 0
    check "tmpfs mount" test_tmpfs
    check "ext2 on a loop device" test_loop
    ;;
esac
echo "$failures failed"
[ "$failures" -eq 0 ]
