# Exits 0 when a TCP socket listens on port $1 (4 hex digits, as /proc/net/tcp writes it), read
# from /proc without connecting. With more arguments, only sockets bound to one of those
# addresses (hex, as /proc writes them) count.
port=$1
shift
awk -v port="$port" -v accepted="$*" '
  BEGIN { n = split(accepted, list, " "); for (i = 1; i <= n; i++) ok[list[i] ":" port] = 1 }
  $4 == "0A" {
    if (n == 0) { if ($2 ~ (":" port "$")) found = 1 }
    else if ($2 in ok) found = 1
  }
  END { exit !found }
' /proc/net/tcp /proc/net/tcp6 2>/dev/null
