# vmkit waitForUnit, run by the backdoor with: set -- <unit> <wanted state> <user or empty>
# Polls the unit's ActiveState inside the guest (no host round trip per poll) and prints each new
# state. Exits 0 when the state is the wanted one; 3 when the unit failed; 4 when it is inactive
# and no job is queued that could still start it (NixOS driver semantics).
unit=$1 want=$2 user=$3
sc() {
  if [ -n "$user" ]; then
    runuser -u "$user" -- env XDG_RUNTIME_DIR="/run/user/$(id -u "$user")" systemctl --user "$@"
  else
    systemctl "$@"
  fi
}
last=
while :; do
  state=$(sc show -P ActiveState -- "$unit" 2> /dev/null)
  [ "$state" != "$last" ] && echo "$state" && last=$state
  [ "$state" = "$want" ] && exit 0
  case "$state" in
    failed) [ "$want" != failed ] && exit 3 ;;
    inactive)
      if [ "$want" != inactive ] && [ -z "$(sc list-jobs --no-legend 2> /dev/null)" ] &&
        [ "$(sc show -P ActiveState -- "$unit" 2> /dev/null)" = inactive ]; then
        exit 4
      fi
      ;;
  esac
  sleep 0.2
done
