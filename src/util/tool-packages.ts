/** The Debian package that provides each host tool vmkit runs, for "install it" hints. */
const TOOL_PACKAGES: Record<string, string> = {
  'qemu-system-x86_64': 'qemu-system-x86',
  'qemu-img': 'qemu-utils',
  depmod: 'kmod',
  setpriv: 'util-linux',
  unshare: 'util-linux',
  'dpkg-deb': 'dpkg',
  cpio: 'cpio',
  tcpdump: 'tcpdump',
  mmdebstrap: 'mmdebstrap',
  mke2fs: 'e2fsprogs',
  debugfs: 'e2fsprogs',
  tesseract: 'tesseract-ocr',
  'grub-mkrescue': 'grub-common',
  xorriso: 'xorriso',
  mformat: 'mtools',
  openssl: 'openssl',
  'musl-gcc': 'musl-tools',
  ssh: 'openssh-client',
  'ssh-keygen': 'openssh-client',
  rsync: 'rsync',
  fakeroot: 'fakeroot',
  newuidmap: 'uidmap',
  newgidmap: 'uidmap',
  ip: 'iproute2',
  'apt-get': 'apt',
};

/** The package that provides `program` (a bare name or a path), if vmkit knows it. */
export function toolPackage(program: string): string | undefined {
  return TOOL_PACKAGES[program.slice(program.lastIndexOf('/') + 1)];
}

/** The one-line fix for a missing tool: the exact apt-get command, or what to look for. */
export function installHint(program: string): string {
  const pkg = toolPackage(program);
  const name = program.slice(program.lastIndexOf('/') + 1);
  if (!pkg) return `${name} is not installed`;
  const sudo = process.getuid?.() === 0 ? '' : 'sudo ';
  return `${name} is not installed: ${sudo}apt-get install ${pkg}`;
}
