# Prints the device of the virtio disk whose serial is $1 (/dev/vdb), waiting up to $2 seconds for
# it (a disk just attached shows once the guest's PCI hotplug has probed it); exits 1 without one.
tries=$(($2 * 10))
while :; do
  for block in /sys/block/vd*; do
    [ -r "$block/serial" ] || continue
    read -r serial < "$block/serial" || true
    if [ "$serial" = "$1" ]; then
      echo "/dev/${block##*/}"
      exit 0
    fi
  done
  [ "$tries" -gt 0 ] || break
  tries=$((tries - 1))
  sleep 0.1
done
echo "no virtio disk has serial $1" >&2
exit 1
