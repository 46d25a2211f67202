# Refreshes what a guest took from its identity when it booted, where that can be done without a
# reboot (a machine restored from a saved boot has a new hostname and machine ID; these were read
# before). The boot ID and the uptime stay the saved boot's.
set -e
if [ -d /run/systemd/system ]; then
  # journald keeps the machine ID it read at its start: its entries carry the new one from here on.
  systemctl restart systemd-journald.service
fi
if ls /etc/ssh/ssh_host_*_key > /dev/null 2>&1 && command -v ssh-keygen > /dev/null; then
  # Host keys made once (at image build, or in the saved boot) would be every machine's.
  rm -f /etc/ssh/ssh_host_*
  ssh-keygen -A > /dev/null
  if [ -d /run/systemd/system ] && systemctl is-active --quiet ssh.service; then
    systemctl restart ssh.service
  fi
fi
