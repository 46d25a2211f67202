# vmkit project VM: mounts the persistent data disk $1 at $2, making an ext2 filesystem on it
# the first time (only when the disk is blank, so a disk that fails to mount keeps its data).
set -e
dev=$1
dir=$2
mkdir -p "$dir"
if grep -q " $dir " /proc/mounts; then exit 0; fi
if mount -t ext4 "$dev" "$dir" 2>/dev/null; then exit 0; fi
if [ "$(dd if="$dev" bs=4096 count=1 2>/dev/null | tr -d '\000' | wc -c)" -ne 0 ]; then
  echo "vmkit: $dev holds data but does not mount as ext2/3/4" >&2
  exit 1
fi
mke2fs -q "$dev"
mount -t ext4 "$dev" "$dir"
