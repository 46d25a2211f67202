#!/usr/bin/env bash
# Installs what vmkit needs on Debian (or Ubuntu) and builds it: QEMU and the image tools from
# apt, npm dependencies, the TypeScript build, and the tiny guest image. Safe to run again:
# each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

# Debian keeps depmod, mke2fs and debugfs in /usr/sbin, which an ordinary account's PATH lacks:
# they run fine without root, so look there too (vmkit itself does the same).
for dir in /usr/local/sbin /usr/sbin /sbin; do
  case ":$PATH:" in *":$dir:"*) ;; *) PATH="$PATH:$dir" ;; esac
done
export PATH

# command -> Debian package that provides it
declare -A NEEDED=(
  [qemu-system-x86_64]=qemu-system-x86
  [qemu-img]=qemu-utils
  [depmod]=kmod
  [setpriv]=util-linux
  [dpkg-deb]=dpkg
  [cpio]=cpio
  [tcpdump]=tcpdump   # reads back the switch's packet captures in the tests
  [mmdebstrap]=mmdebstrap   # builds the debian image's root filesystem
  [mke2fs]=e2fsprogs        # turns it into ext4 without mounting anything
  [tesseract]=tesseract-ocr # OCR of guest screens (getScreenText, waitForText)
  # better-sqlite3 (the fleet's state) compiles from source where no prebuilt binary downloads
  [make]=make
  [g++]=g++
  [python3]=python3
  # The console tests boot a GRUB rescue ISO (BIOS and UEFI) and a login console they build.
  [grub-mkrescue]=grub-common
  [xorriso]=xorriso
  [mformat]=mtools
  [openssl]=openssl
  [musl-gcc]=musl-tools     # compiles the guest agent (guest/agent/) into a static binary
  # vmkit ssh (the client, and a key per project VM) and sync by rsync over SSH
  [ssh]=openssh-client
  [ssh-keygen]=openssh-client
  [rsync]=rsync
)
# Without root, the debian image is built by mmdebstrap in a user namespace (newuidmap maps the
# account's subordinate ids) and made into ext4 under fakeroot.
if [ "$(id -u)" != 0 ]; then
  NEEDED[newuidmap]=uidmap
  NEEDED[fakeroot]=fakeroot
  NEEDED[unshare]=util-linux
fi
# file -> Debian package that provides it
declare -A NEEDED_FILES=(
  [/usr/lib/grub/i386-pc/modinfo.sh]=grub-pc-bin
  [/usr/lib/grub/x86_64-efi/modinfo.sh]=grub-efi-amd64-bin
  [/usr/share/OVMF/OVMF_CODE_4M.fd]=ovmf
)
missing=()
for cmd in "${!NEEDED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEEDED[$cmd]}")
done
for file in "${!NEEDED_FILES[@]}"; do
  [ -e "$file" ] || missing+=("${NEEDED_FILES[$file]}")
done

# Root is needed for apt-get alone, and only when something is missing. Without root, sudo is
# used if it can ask (a terminal) or needs no password for apt-get; otherwise setup prints the
# exact commands to run and stops.
can_apt() {
  [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 &&
    { [ -t 0 ] || sudo -n true 2>/dev/null || sudo -n -l apt-get >/dev/null 2>&1; }; }
}
apt_get() {
  if [ "$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get "$@"
  else sudo DEBIAN_FRONTEND=noninteractive apt-get "$@"
  fi
}

# Images are built from Debian packages, so apt's package lists must be present.
lists_present() { compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; }
if [ "${#missing[@]}" -gt 0 ] || ! lists_present; then
  command -v apt-get >/dev/null 2>&1 || { say "apt-get not found: vmkit's setup needs Debian or Ubuntu"; exit 1; }
  [ "${#missing[@]}" -gt 0 ] && mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if ! can_apt; then
    install=""
    [ "${#missing[@]}" -gt 0 ] && install=" && sudo apt-get install --no-install-recommends ${missing[*]}"
    say "apt-get needs root here (no sudo without a password); run this, then run setup again:"
    say "  sudo apt-get update$install"
    exit 1
  fi
  say "apt-get update"
  apt_get update -q >/dev/null
fi
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  apt_get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# better-sqlite3 compiles where no prebuilt binary downloads; node-gyp would then fetch Node's
# headers, so point it at the ones Debian's nodejs ships when they match this Node.
if [ -z "${npm_config_nodedir:-}" ] && [ "$(npm config get nodedir 2>/dev/null)" = undefined ] &&
  [ -f /usr/include/node/node_version.h ]; then
  headers=$(awk '/define NODE_(MAJOR|MINOR|PATCH)_VERSION/ {printf "%s.", $3}' /usr/include/node/node_version.h)
  if [ "v${headers%.}" = "$(node -v)" ]; then export npm_config_nodedir=/usr; fi
fi

# A node_modules that is a link to another checkout's (a git worktree's) is left alone: npm ci
# would empty the tree it points to.
if [ -L node_modules ]; then
  say "node_modules is a link to $(readlink node_modules): not running npm ci here"
elif [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error >&2 # stdout is the JSON of the bench:* script that runs next
fi

# A native module built for another Node (or whose build was skipped) is rebuilt here.
if ! node -e "new (require('better-sqlite3'))(':memory:')" >/dev/null 2>&1; then
  say "npm rebuild better-sqlite3"
  npm rebuild better-sqlite3 --loglevel=error >&2
fi

say "building"
npm run --silent build
chmod +x dist/cli/main.js

say "building the tiny image (cached after the first time)"
if ! node dist/cli/main.js image build tiny >/dev/null; then
  # Stale package lists name versions the archive no longer serves: refresh them once.
  say "image build failed; refreshing apt's package lists and trying again"
  if can_apt; then apt_get update -q >/dev/null; else say "(sudo apt-get update may help)"; exit 1; fi
  node dist/cli/main.js image build tiny >/dev/null
fi
say "building the debian image (cached after the first time; one to two minutes)"
node dist/cli/main.js image build debian >/dev/null
say "ready"
