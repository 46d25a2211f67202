#!/bin/sh
# vmkit backdoor: a root shell driven by the host over a virtio serial port.
#
# The command channel is the virtserialport named vmkit.shell: unlike a virtio console (hvc),
# it has no tty line discipline, and QEMU throttles it instead of dropping bytes when the host
# is slow to read.
#
# Requests from the host, each a line on the command channel:
#   X <id> <timeout-seconds> <length>        followed by <length> bytes of script, run with sh
#   U <id> <size> <base64 path>              receive <size> bytes on the transfer port into path
#   D <id> <base64 path>                     send the file at path on the transfer port
# Every request is answered on the command channel by:
#   <<<VMKIT:R <id> <status> <timed-out 0|1>>>>
#   <base64 stdout>
#   <base64 stderr>
#   <<<VMKIT:E <id>>>>
# Uploads first get <<<VMKIT:GO <id>>>> (the host may send now); downloads get
# <<<VMKIT:SEND <id> <size>>>> before the bytes go out on the transfer port.
#
# Commands write to files, not pipes, and the shell waits for the command's process, not for
# end-of-file: a background process that keeps stdout open cannot hang a call.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
work=/run/vmkit
mkdir -p "$work"
[ -p "$work/never" ] || mkfifo "$work/never"
cd / || exit 1

port_named() {
  for port in /sys/class/virtio-ports/*; do
    [ "$(cat "$port/name" 2>/dev/null)" = "$1" ] && { echo "/dev/${port##*/}"; return 0; }
  done
  return 1
}
channel=$(port_named vmkit.shell) || { echo "vmkit backdoor: no vmkit.shell port" >&2; sleep 5; exit 1; }
transfer=$(port_named vmkit.transfer) || transfer=
exec 3<>"$channel"
[ -n "$transfer" ] && exec 4<>"$transfer"

decode() { printf '%s' "$1" | base64 -d; }

reply() { # id status
  {
    timed_out=0
    [ -e "$work/timed-out" ] && [ "$2" -ge 128 ] && timed_out=1
    printf '<<<VMKIT:R %s %s %s>>>\n' "$1" "$2" "$timed_out"
    # An empty file needs no base64 process: under emulation every process start costs.
    [ -s "$work/out" ] && base64 -w 0 "$work/out"; echo
    [ -s "$work/err" ] && base64 -w 0 "$work/err"; echo
    printf '<<<VMKIT:E %s>>>\n' "$1"
  } >&3
}

fresh_output() {
  # Unlink instead of truncating: a leftover background writer keeps its own old file.
  rm -f "$work/out" "$work/err" "$work/timed-out"
  : > "$work/out"; : > "$work/err"
}

run_script() { # id timeout length
  head -c "$3" <&3 > "$work/script"
  fresh_output
  # A session of its own, so that a timeout can end the command and everything it started.
  setsid sh "$work/script" > "$work/out" 2> "$work/err" < /dev/null &
  pid=$!
  # The watchdog sleeps in a builtin (read -t on a FIFO that never delivers): one fork, no
  # program to start, and nothing left behind when it is killed.
  ( read -t "$2" _ <> "$work/never"; : > "$work/timed-out"; kill -KILL -"$pid" ) > /dev/null 2>&1 &
  dog=$!
  wait "$pid"
  status=$?
  kill -KILL "$dog" 2> /dev/null
  wait "$dog" 2> /dev/null
  reply "$1" "$status"
}

receive_file() { # id size base64-path
  fresh_output
  if [ -z "$transfer" ]; then
    echo "vmkit backdoor: no transfer port" > "$work/err"; reply "$1" 1; return
  fi
  path=$(decode "$3")
  printf '<<<VMKIT:GO %s>>>\n' "$1" >&3
  # Always drain exactly <size> bytes, even when the target cannot be written.
  if : > "$path" 2> "$work/err"; then
    head -c "$2" <&4 > "$path" 2> "$work/err"
    status=$?
  else
    head -c "$2" <&4 > /dev/null
    status=1
  fi
  reply "$1" "$status"
}

send_file() { # id base64-path
  fresh_output
  path=$(decode "$2")
  if [ -z "$transfer" ]; then
    echo "vmkit backdoor: no transfer port" > "$work/err"; reply "$1" 1; return
  fi
  if [ ! -f "$path" ] || [ ! -r "$path" ]; then
    echo "vmkit backdoor: cannot read $path: not a readable regular file" > "$work/err"; reply "$1" 1; return
  fi
  size=$(wc -c < "$path")
  printf '<<<VMKIT:SEND %s %s>>>\n' "$1" "$size" >&3
  head -c "$size" "$path" >&4 2> "$work/err"
  reply "$1" $?
}

printf '\nSpawning backdoor root shell...\n' >&3
while IFS=' ' read -r kind id arg1 arg2 <&3; do
  case "$kind" in
    X) run_script "$id" "$arg1" "$arg2" ;;
    U) receive_file "$id" "$arg1" "$arg2" ;;
    D) send_file "$id" "$arg1" ;;
    '') ;;
    *) fresh_output; echo "vmkit backdoor: unknown request '$kind'" > "$work/err"; reply "${id:-0}" 2 ;;
  esac
done
