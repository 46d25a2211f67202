#!/bin/sh
# Run once inside the new Debian root at image build time (by mmdebstrap, chrooted).
set -eu
for release in /lib/modules/*; do depmod -a "${release##*/}"; done
systemctl enable vmkit-backdoor.service
# A login prompt on each of the six virtual terminals; the serial one on ttyS0 comes from the
# kernel's console= argument.
for n in 1 2 3 4 5 6; do systemctl enable "getty@tty$n.service"; done
# Periodic jobs that would only compete with tests for the emulated CPU.
systemctl mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
  e2scrub_reap.service fstrim.timer 2> /dev/null || true
# root logs in on a console without a password: these are test machines.
passwd -d root > /dev/null
echo debian > /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost\n' > /etc/hosts
# A machine id now, so that the first boot is not a "first boot" (which applies every preset).
od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > /etc/machine-id
echo >> /etc/machine-id
