# Exits 0 when a unix socket at path $1 is listening ($2 = stream) or bound ($2 = datagram), read
# from /proc/net/unix. Columns: Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 is
# __SO_ACCEPTCON.
awk -v p="$1" -v kind="$2" '
  $8 == p {
    if (kind == "datagram") { if ($5 == "0002") found = 1 }
    else if ($5 == "0001" && $4 == "00010000") found = 1
  }
  END { exit !found }
' /proc/net/unix
