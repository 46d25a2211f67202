#!/bin/sh
# vmkit backdoor: a root shell driven by the host over a virtio serial port.
#
# The command channel is the virtserialport named vmkit.shell: unlike a virtio console (hvc),
# it has no tty line discipline, and QEMU throttles it instead of dropping bytes when the host
# is slow to read.
#
# Requests from the host, each a line on the command channel:
#   X <id> <timeout-seconds> <length>        followed by <length> bytes of script, run with sh
#   Y <id> <timeout-seconds> <script>        the same for a one-line script sent on the line itself
#                                            (no newline, no leading or trailing blanks)
#   U <id> <size> <base64 path>              receive <size> bytes on the transfer port into path
#   D <id> <base64 path>                     send the file at path on the transfer port
#   P <id> <timeout-seconds> <length>        followed by a script: start it and return at once
#                                            (timeout 0: none); its output streams as it comes
#   I <id> <process> <length>                followed by bytes for the stdin of process <process>
#                                            (the id of the P request that started it)
#   C <id> <process>                         end its stdin once it has read all that was sent
#   K <id> <process> <signal>                send a signal to its whole session
# Every request is answered on the command channel by:
#   <<<VMKIT:R <id> <status> <timed-out 0|1>>>>
#   <base64 stdout>
#   <base64 stderr>
#   <<<VMKIT:E <id>>>>
# A started process (P) streams, while it runs and outside any reply:
#   <<<VMKIT:O <id> <1 stdout|2 stderr> <base64 bytes>>>>
# and once it has exited and all its output went out:
#   <<<VMKIT:Z <id> <status> <timed-out 0|1>>>>
# Every line on the command channel is written while holding the channel lock (a token in a
# FIFO, taken and given back by shell builtins), so lines of processes never interleave.
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
rm -f "$work/lock"; mkfifo "$work/lock"; exec 6<>"$work/lock"; printf x >&6

hold() { read -r -n 1 _ <&6; }
free() { printf x >&6; }

decode() { printf '%s' "$1" | base64 -d; }

reply() { # id status
  hold
  {
    timed_out=0
    [ -e "$flag" ] && [ "$2" -ge 128 ] && timed_out=1
    printf '<<<VMKIT:R %s %s %s>>>\n' "$1" "$2" "$timed_out"
    # An empty file needs no base64 process: under emulation every process start costs.
    [ -s "$out" ] && base64 -w 0 "$out"; echo
    [ -s "$err" ] && base64 -w 0 "$err"; echo
    printf '<<<VMKIT:E %s>>>\n' "$1"
  } >&3
  free
}

served=0
fresh_output() {
  # A new name per request instead of truncating: a leftover background writer keeps its own old
  # file. The old files go in one rm every 64 requests, not one rm per request: under emulation
  # every process start costs.
  served=$((served + 1))
  [ $((served % 64)) -eq 0 ] && rm -f "$work"/out.* "$work"/err.* "$work"/flag.*
  out="$work/out.$served"; err="$work/err.$served"; flag="$work/flag.$served"
  : > "$out"; : > "$err"
}

run_script() { # id timeout length
  # Exactly the script's bytes: head -c would read ahead into whatever follows.
  dd bs=65536 count="$3" iflag=count_bytes,fullblock <&3 2> /dev/null > "$work/script"
  run_saved_script "$1" "$2"
}

run_saved_script() { # id timeout
  fresh_output
  # A session of its own, so that a timeout can end the command and everything it started.
  setsid sh "$work/script" > "$out" 2> "$err" < /dev/null 3>&- 4>&- 6>&- &
  pid=$!
  # The watchdog sleeps in a builtin (read -t on a FIFO that never delivers): one fork, no
  # program to start, and nothing left behind when it is killed.
  ( read -t "$2" _ <> "$work/never"; : > "$flag"; kill -KILL -"$pid" ) > /dev/null 2>&1 3>&- 4>&- 6>&- &
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
  printf 'vmkit backdoor: %s\n' "$2" >> "$err"; reply "$1" 1
}

receive_file() { # id size base64-path
  fresh_output
  [ -n "$transfer" ] || { fail_with "$1" "no transfer port"; return; }
  path=$(decode "$3")
  part="$path.vmkit-part-$1"
  [ -d "$path" ] && { fail_with "$1" "cannot write $path: it is a directory"; return; }
  # true, not ':': a failed redirection of a special builtin would end this shell.
  true 2> "$err" > "$part" || { fail_with "$1" "cannot write $path"; return; }
  hold; printf '<<<VMKIT:GO %s>>>\n' "$1" >&3; free
  next_frame "$1" || { rm -f "$part"; fail_with "$1" "the transfer port closed"; return; }
  # When the file cannot be written (disk full), the rest of the frame is still drained.
  take_bytes "$size" | { cat > "$part" 2> "$err"; wrote=$?; cat > /dev/null; exit "$wrote"; }
  wrote=$?
  IFS= read -r expected <&4
  sum=$(md5sum < "$part"); sum=${sum%% *}
  if [ "$wrote" -ne 0 ]; then rm -f "$part"; fail_with "$1" "writing $path failed"
  elif [ "$expected" = FAILED ]; then rm -f "$part"; fail_with "$1" "the host could not read the whole file"
  elif [ "$expected" != "$sum" ]; then rm -f "$part"; fail_with "$1" "checksum mismatch (received $sum, sent $expected)"
  else
    # An existing file keeps its permissions.
    [ -e "$path" ] && chmod "$(stat -c %a "$path")" "$part" 2> /dev/null
    mv -f "$part" "$path" 2> "$err" || { rm -f "$part"; fail_with "$1" "cannot replace $path"; return; }
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
  sum=$(md5sum < "$path" 2> "$err") || { fail_with "$1" "cannot read $path"; return; }
  size=$(wc -c < "$path"); size=$((size))
  hold; printf '<<<VMKIT:SEND %s %s>>>\n' "$1" "$size" >&3; free
  printf '<<<VMKIT:XFER %s %s>>>\n' "$1" "$size" >&4
  # Exactly <size> bytes even if the file shrinks meanwhile; the checksum then tells.
  cat "$path" /dev/zero 2> /dev/null | head -c "$size" >&4
  printf '%s\n' "${sum%% *}" >&4
  reply "$1" 0
}

# Started processes: each has a pump (the shell that started it) that streams its output, feeds
# its stdin and reports its exit. Files of process <id> are $work/p<id>.*
start_process() { # id timeout length
  p="$work/p$1"
  dd bs=65536 count="$3" iflag=count_bytes,fullblock <&3 2> /dev/null > "$p.sh"
  : > "$p.out"; : > "$p.err"; : > "$p.in"
  rm -f "$p.st" "$p.pid" "$p.eof" "$p.timed-out" "$p.stdin" "$p.wake"
  mkfifo "$p.stdin" "$p.wake"
  pump "$1" "$2" > /dev/null 2>&1 < /dev/null &
  fresh_output; reply "$1" 0
}

# Sends bytes <from>..<to> of a file as output lines of process <id>; sets $sent to <to>.
send_new() { # id stream file from to
  sent=$4
  while [ "$sent" -lt "$5" ]; do
    n=$(($5 - sent)); [ "$n" -gt 49152 ] && n=49152
    chunk=$(dd if="$3" bs=65536 skip="$sent" count="$n" iflag=skip_bytes,count_bytes,fullblock 2> /dev/null | base64 -w 0)
    hold; printf '<<<VMKIT:O %s %s %s>>>\n' "$1" "$2" "$chunk" >&3; free
    sent=$((sent + n))
  done
}

pump() { # id timeout
  id=$1; p="$work/p$1"
  exec 8<> "$p.wake"
  (
    setsid sh "$p.sh" < "$p.stdin" > "$p.out" 2> "$p.err" 3>&- 4>&- 6>&- 8>&- &
    pid=$!
    echo "$pid" > "$p.pid"
    dog=
    if [ "$2" -gt 0 ]; then
      ( read -t "$2" _ <> "$work/never"; : > "$p.timed-out"; kill -KILL -"$pid" ) > /dev/null 2>&1 &
      dog=$!
    fi
    wait "$pid"
    echo "$?" > "$p.st"
    [ -n "$dog" ] && { kill -KILL "$dog" 2> /dev/null; wait "$dog" 2> /dev/null; }
    echo >&8
  ) &
  # Blocks until the process has its stdin open, which it does before anything else.
  exec 7> "$p.stdin"
  o=0; e=0; i=0; tick=0.05; stdin_open=1
  while :; do
    finished=; [ -s "$p.st" ] && finished=1
    set -- $(stat -c %s "$p.out" "$p.err" "$p.in" 2> /dev/null) 0 0 0
    moved=
    [ "$1" -gt "$o" ] && { send_new "$id" 1 "$p.out" "$o" "$1"; o=$sent; moved=1; }
    [ "$2" -gt "$e" ] && { send_new "$id" 2 "$p.err" "$e" "$2"; e=$sent; moved=1; }
    if [ -n "$stdin_open" ] && [ "$3" -gt "$i" ]; then
      dd if="$p.in" bs=65536 skip="$i" count=$(($3 - i)) iflag=skip_bytes,count_bytes,fullblock 2> /dev/null >&7
      i=$3; moved=1
    fi
    [ -n "$stdin_open" ] && [ -e "$p.eof" ] && [ "$3" -le "$i" ] && { exec 7>&-; stdin_open=; }
    [ -n "$finished" ] && break
    if [ -n "$moved" ]; then tick=0.05; else
      case "$tick" in 0.05) tick=0.1 ;; 0.1) tick=0.2 ;; *) tick=0.5 ;; esac
    fi
    read -t "$tick" _ <&8
  done
  read -r status < "$p.st"
  timed_out=0; [ -e "$p.timed-out" ] && timed_out=1
  hold; printf '<<<VMKIT:Z %s %s %s>>>\n' "$id" "$status" "$timed_out" >&3; free
  rm -f "$p".*
}

stdin_for() { # id process length
  fresh_output
  if [ -e "$work/p$2.in" ]; then
    dd bs=65536 count="$3" iflag=count_bytes,fullblock <&3 2> /dev/null >> "$work/p$2.in"
    reply "$1" 0
  else
    dd bs=65536 count="$3" iflag=count_bytes,fullblock <&3 > /dev/null 2>&1
    fail_with "$1" "process $2 has exited"
  fi
}

signal_process() { # id process signal
  fresh_output
  tries=0
  while [ -e "$work/p$2.in" ] && [ ! -s "$work/p$2.pid" ] && [ "$tries" -lt 100 ]; do
    read -t 0.05 _ <> "$work/never"; tries=$((tries + 1))
  done
  if [ -s "$work/p$2.pid" ] && read -r pid < "$work/p$2.pid"; then
    # Until the process has called setsid its session does not exist yet: then it is alone.
    kill -"$3" -"$pid" 2> /dev/null || kill -"$3" "$pid" 2> "$err"; reply "$1" $?
  else
    fail_with "$1" "process $2 has exited"
  fi
}

serve() {
  printf '\nSpawning backdoor root shell...\n' >&3
  while IFS=' ' read -r kind id arg1 arg2 <&3; do
    case "$kind" in
      X) run_script "$id" "$arg1" "$arg2" ;;
      Y) printf '%s\n' "$arg2" > "$work/script"; run_saved_script "$id" "$arg1" ;;
      P) start_process "$id" "$arg1" "$arg2" ;;
      I) stdin_for "$id" "$arg1" "$arg2" ;;
      C) fresh_output; [ -e "$work/p$arg1.in" ] && : > "$work/p$arg1.eof"; reply "$id" 0 ;;
      K) signal_process "$id" "$arg1" "$arg2" ;;
      U) receive_file "$id" "$arg1" "$arg2" ;;
      D) send_file "$id" "$arg1" ;;
      '') ;;
      *) fresh_output; echo "vmkit backdoor: unknown request '$kind'" > "$err"; reply "${id:-0}" 2 ;;
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
