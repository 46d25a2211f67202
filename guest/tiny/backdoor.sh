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
# Uploads first get <<<VMKIT:GO <id>>>> (the host may send now) once the target can be written;
# downloads get <<<VMKIT:SEND <id> <size>>>> before the bytes go out on the transfer port.
#
# File bytes on the transfer port always travel in whole frames:
#   <<<VMKIT:XFER <id> <size>>>>\n   then exactly <size> bytes   then <md5 hex, or FAILED>\n
# Both ends write and read whole frames whatever fails, and a frame for another id is skipped
# whole, so a failed transfer can never shift the bytes of the next one. An upload lands in a
# temporary file beside its target, renamed into place only when its checksum matches.
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
# The port opens for one holder at a time; an earlier backdoor's leftovers may still hold it.
open_channel() {
  until true 3<> "$channel"; do read -t 1 _ <> "$work/never"; done 2> /dev/null
  exec 3<>"$channel"
}
open_channel
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
  # Exactly the script's bytes: head -c would read ahead into whatever follows.
  dd bs=65536 count="$3" iflag=count_bytes,fullblock <&3 2> /dev/null > "$work/script"
  fresh_output
  # A session of its own, so that a timeout can end the command and everything it started.
  # Without the channels (3, 4): a background process must not hold the ports open.
  setsid sh "$work/script" > "$work/out" 2> "$work/err" < /dev/null 3>&- 4>&- &
  pid=$!
  # The watchdog sleeps in a builtin (read -t on a FIFO that never delivers): one fork, no
  # program to start, and nothing left behind when it is killed.
  ( read -t "$2" _ <> "$work/never"; : > "$work/timed-out"; kill -KILL -"$pid" ) > /dev/null 2>&1 3>&- 4>&- &
  dog=$!
  wait "$pid"
  status=$?
  kill -KILL "$dog" 2> /dev/null
  wait "$dog" 2> /dev/null
  reply "$1" "$status"
}

# Exactly $1 bytes from the transfer port: head -c reads ahead through stdio and would swallow
# what follows the frame's bytes.
take_bytes() { # count
  dd bs=65536 count="$1" iflag=count_bytes,fullblock <&4 2> /dev/null
}

# Reads frame headers until the one for transfer $1; skips whole frames of other transfers.
# Sets $size.
next_frame() { # id
  while IFS= read -r header <&4; do
    case "$header" in
      "<<<VMKIT:XFER $1 "*">>>") size=${header#"<<<VMKIT:XFER $1 "}; size=${size%">>>"}; return 0 ;;
      "<<<VMKIT:XFER "*">>>")
        stale=${header#"<<<VMKIT:XFER "}; stale=${stale#* }; stale=${stale%">>>"}
        take_bytes "$stale" > /dev/null; IFS= read -r _ <&4 ;;
    esac
  done
  return 1
}

fail_with() { # id message
  printf 'vmkit backdoor: %s\n' "$2" >> "$work/err"; reply "$1" 1
}

receive_file() { # id size base64-path
  fresh_output
  [ -n "$transfer" ] || { fail_with "$1" "no transfer port"; return; }
  path=$(decode "$3")
  part="$path.vmkit-part-$1"
  [ -d "$path" ] && { fail_with "$1" "cannot write $path: it is a directory"; return; }
  # true, not ':': a failed redirection of a special builtin would end this shell.
  true 2> "$work/err" > "$part" || { fail_with "$1" "cannot write $path"; return; }
  printf '<<<VMKIT:GO %s>>>\n' "$1" >&3
  next_frame "$1" || { rm -f "$part"; fail_with "$1" "the transfer port closed"; return; }
  # When the file cannot be written (disk full), the rest of the frame is still drained.
  take_bytes "$size" | { cat > "$part" 2> "$work/err"; wrote=$?; cat > /dev/null; exit "$wrote"; }
  wrote=$?
  IFS= read -r expected <&4
  sum=$(md5sum < "$part"); sum=${sum%% *}
  if [ "$wrote" -ne 0 ]; then rm -f "$part"; fail_with "$1" "writing $path failed"
  elif [ "$expected" = FAILED ]; then rm -f "$part"; fail_with "$1" "the host could not read the whole file"
  elif [ "$expected" != "$sum" ]; then rm -f "$part"; fail_with "$1" "checksum mismatch (received $sum, sent $expected)"
  else
    # An existing file keeps its permissions.
    [ -e "$path" ] && chmod "$(stat -c %a "$path")" "$part" 2> /dev/null
    mv -f "$part" "$path" 2> "$work/err" || { rm -f "$part"; fail_with "$1" "cannot replace $path"; return; }
    reply "$1" 0
  fi
}

send_file() { # id base64-path
  fresh_output
  path=$(decode "$2")
  [ -n "$transfer" ] || { fail_with "$1" "no transfer port"; return; }
  if [ ! -f "$path" ] || [ ! -r "$path" ]; then
    fail_with "$1" "cannot read $path: not a readable regular file"; return
  fi
  sum=$(md5sum < "$path" 2> "$work/err") || { fail_with "$1" "cannot read $path"; return; }
  size=$(wc -c < "$path"); size=$((size))
  printf '<<<VMKIT:SEND %s %s>>>\n' "$1" "$size" >&3
  printf '<<<VMKIT:XFER %s %s>>>\n' "$1" "$size" >&4
  # Exactly <size> bytes even if the file shrinks meanwhile; the checksum then tells.
  cat "$path" /dev/zero 2> /dev/null | head -c "$size" >&4
  printf '%s\n' "${sum%% *}" >&4
  reply "$1" 0
}

serve() {
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
}

# End of file: the host closed its end (a detached fleet instance whose CLI call finished). A
# port with no host reads as end-of-file at once, so reopen it after a short pause (read -t on
# the FIFO is a builtin: no process) and announce the backdoor again for the next host.
while :; do
  serve
  exec 3>&-
  read -t 0.2 _ <> "$work/never"
  open_channel
done
