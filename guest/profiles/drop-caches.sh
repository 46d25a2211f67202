# Writes dirty pages out and drops the page cache, so that a saved state holds fewer pages.
sync
echo 3 > /proc/sys/vm/drop_caches
