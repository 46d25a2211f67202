# Reboots the guest: the VMM resets it (or ends, with -no-reboot).
reboot
