# Powers the guest off (the VMM then ends); disks are synced first.
sync
poweroff
