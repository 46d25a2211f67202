# vmkit's set-up of a guest after a boot or a restore, as root. Its arguments are steps, each a
# word and its fields, done in the order given (an empty field is an absent one):
#   clock SECONDS                   set the clock
#   hostname NAME                   set the hostname
#   hostname-file NAME              write /etc/hostname, and NAME on 127.0.1.1 in /etc/hosts
#   machine-id ID                   write /etc/machine-id; the journal's folders under ID lead
#                                   to those journald writes (it keeps the id it started with)
#   entropy HEX                     mix fresh randomness into the kernel's pool
#   nic INDEX MAC ADDRESS           bring eth<INDEX> up, with MAC and ADDRESS/prefix if given
#   renumber INDEX MAC ADDRESS      give eth<INDEX> a new MAC and address, or none (a clone)
#   hostnic INDEX ADDRESS GATEWAY NAMESERVER
#                                   the NIC to the host, its default route and resolver if given
#   outbound INDEX ADDRESS GATEWAY NAMESERVER
#                                   the NIC out: default route and resolver through it
#   host ADDRESS NAME               append "ADDRESS NAME" to /etc/hosts
# Shell builtins but for the tools each step needs: under emulation every program costs.
refuse() {
  echo "setup.sh: $*" >&2
  exit 2
}
need() {
  [ "$1" -le "$2" ] || refuse "$3: needs $1 fields, got $2"
}
while [ $# -gt 0 ]; do
  word=$1
  shift
  case $word in
  clock)
    need 1 $# clock
    date -s "@$1" > /dev/null
    shift ;;
  hostname)
    need 1 $# hostname
    hostname "$1"
    shift ;;
  hostname-file)
    need 1 $# hostname-file
    echo "$1" > /etc/hostname
    sed -i '/^127\.0\.1\.1[[:space:]]/d' /etc/hosts
    printf '127.0.1.1\t%s\n' "$1" >> /etc/hosts
    shift ;;
  machine-id)
    need 1 $# machine-id
    case $1 in *[!0-9a-f]*) refuse "machine-id: not hex: $1" ;; esac
    [ ${#1} -eq 32 ] || refuse "machine-id: not 32 digits: $1"
    old=
    [ ! -r /etc/machine-id ] || read -r old < /etc/machine-id || true
    if [ "$old" != "$1" ]; then
      echo "$1" > /etc/machine-id
      # With a persistent journal only its folder: the old id's may come later (at journald's
      # first flush: linked anyway), and the volatile one's goes then (a link to it would dangle).
      for journal in /var/log/journal /run/log/journal; do
        [ ${#old} -eq 32 ] && [ -d "$journal" ] || continue
        [ "$journal" = /var/log/journal ] || [ ! -d /var/log/journal ] || continue
        [ ! -e "$journal/$1" ] && [ ! -L "$journal/$1" ] || continue
        target=$old
        [ ! -L "$journal/$old" ] || target=$(readlink "$journal/$old")
        ln -s "$target" "$journal/$1"
      done
    fi
    shift ;;
  entropy)
    need 1 $# entropy
    printf '%s' "$1" > /dev/urandom
    shift ;;
  nic)
    need 3 $# nic
    [ -z "$2" ] || ip link set "eth$1" address "$2"
    ip link set "eth$1" up
    [ -z "$3" ] || ip addr add "$3" dev "eth$1"
    shift 3 ;;
  renumber)
    need 3 $# renumber
    ip link set "eth$1" down
    ip link set "eth$1" address "$2"
    ip addr flush dev "eth$1"
    [ -z "$3" ] || ip addr add "$3" dev "eth$1"
    ip link set "eth$1" up
    shift 3 ;;
  hostnic | outbound)
    need 4 $# "$word"
    ip link set "eth$1" up
    ip addr add "$2" dev "eth$1"
    if [ "$word" = outbound ]; then
      ip route add default via "$3" dev "eth$1"
    elif [ -n "$3" ]; then
      ip route add default via "$3"
    fi
    [ -z "$4" ] || echo "nameserver $4" > /etc/resolv.conf
    shift 4 ;;
  host)
    need 2 $# host
    echo "$1 $2" >> /etc/hosts
    shift 2 ;;
  *)
    refuse "unknown step $word" ;;
  esac
done
