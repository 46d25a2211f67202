# vmkit ssh, guest side: says what the image has ("sshd", "rsync") and authorizes the public key
# $1 (if not empty) for root. With $2 = wait, it then waits up to $3 seconds for a listener on TCP port
# $4 (sshd starts late in a boot) and prints the host's public keys, one "hostkey <key>" each.
key=$1
mode=$2
limit=${3:-0}
port=${4:-22}
if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ]; then
  exit 0
fi
echo sshd
if command -v rsync >/dev/null 2>&1; then echo rsync; fi
[ -n "$key" ] || exit 0
umask 077
mkdir -p /root/.ssh
touch /root/.ssh/authorized_keys
grep -qxF "$key" /root/.ssh/authorized_keys || printf '%s\n' "$key" >> /root/.ssh/authorized_keys
chmod 700 /root/.ssh
chmod 600 /root/.ssh/authorized_keys
[ "$mode" = wait ] || exit 0
hex=$(printf ':%04X' "$port")
listening() {
  for table in /proc/net/tcp /proc/net/tcp6; do
    [ -r "$table" ] || continue
    awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' "$table" &&
      return 0
  done
  return 1
}
tries=0
until listening; do
  tries=$((tries + 1))
  if [ "$tries" -gt $((limit * 10)) ]; then
    echo "nothing listens on guest port $port after $limit s (is sshd running? systemctl status ssh)" >&2
    exit 1
  fi
  sleep 0.1
done
for pub in /etc/ssh/ssh_host_*_key.pub; do
  [ -r "$pub" ] && echo "hostkey $(cut -d' ' -f1,2 "$pub")"
done
exit 0
