# vmkit sync, guest side: in folder $3, removes the paths listed in $2 (one per line: deleted
# files and entries about to be replaced), then unpacks the tar $1 (changed files, modes,
# symlinks), and removes both transfer files.
set -e
tarball=$1
deletions=$2
dest=$3
mkdir -p "$dest"
cd "$dest"
if [ -s "$deletions" ]; then
  while IFS= read -r path; do rm -rf "./$path"; done < "$deletions"
fi
if [ -s "$tarball" ]; then tar -xf "$tarball"; fi
rm -f "$tarball" "$deletions"
