#!/usr/bin/env bash
# CI, second half: what an ordinary user does. An account with sudo for apt-get alone, a fresh
# clone of this checkout in its home, the ordinary PATH (no /usr/sbin), its own empty image cache:
# the README's two commands, `npm run demo` and `npm test` (the whole suite: the fleet without root,
# the rootless-built debian image, project VMs...). A step that only root can do fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
user=vmkit-ci
say() { printf 'ci(as %s): %s\n' "$user" "$*" >&2; }

command -v sudo >/dev/null || { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q sudo >/dev/null; }
# Debian's adduser gives each account subordinate ids; useradd does so only when the files exist.
touch /etc/subuid /etc/subgid
if ! id "$user" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$user"
fi
grep -q "^$user:" /etc/subuid || usermod --add-subuids 300000-365535 --add-subgids 300000-365535 "$user"
printf '%s ALL=(root) NOPASSWD:SETENV: /usr/bin/apt-get\n' "$user" > /etc/sudoers.d/vmkit-ci
chmod 0440 /etc/sudoers.d/vmkit-ci

home=$(getent passwd "$user" | cut -d: -f6)
rm -rf "$home/vmkit"
git clone -q --no-hardlinks "file://$PWD" "$home/vmkit"
chown -R "$user:$user" "$home/vmkit"

as_user() {
  runuser -u "$user" -- env -i HOME="$home" USER="$user" LOGNAME="$user" CI="${CI:-}" \
    PATH=/usr/local/bin:/usr/bin:/bin TERM=dumb bash -c "cd ~/vmkit && $1"
}
say "npm run demo"
as_user 'npm run demo'
say "npm test"
as_user 'npm test'
