# Waits until systemd has finished booting: every unit of the default target started, or failed
# ("degraded" still counts as done: a failed unit is the test's to see, not the cache's).
state=$(systemctl is-system-running --wait 2>/dev/null)
case $state in
running | degraded) exit 0 ;;
*)
  echo "settle-systemd.sh: systemd is $state, not running or degraded" >&2
  exit 1 ;;
esac
