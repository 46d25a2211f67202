// Guests without vmkit's backdoor, made from the tiny image's Debian packages for the console
// tests: a GRUB rescue ISO (BIOS and UEFI) whose menu boots the tiny kernel, an initramfs with a
// getty on ttyS0, a user with a colourful prompt, and a setuid busybox for su; and for project
// VMs from media, an "installer" ISO and the "installed system" disk image it writes.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeCpio } from '../../src/images/cpio.js';
import { buildImage } from '../../src/index.js';
import { cacheDir } from '../../src/util/paths.js';

export const USER = { name: 'alice', password: 'alice-pw' };
export const ROOT_PASSWORD = 'root-pw';

const hash = (password: string) =>
  execFileSync('openssl', ['passwd', '-6', '-salt', 'vmkittest', password], { encoding: 'utf8' }).trim();

/** The tiny image's busybox, from the .deb its build fetched. */
function busybox(dir: string): Buffer {
  const debs = join(cacheDir(), 'debs');
  const deb = readdirSync(debs).find((name) => name.startsWith('busybox-static_'));
  if (!deb) throw new Error(`no busybox-static .deb in ${debs}: build the tiny image first`);
  execFileSync('dpkg-deb', ['-x', join(debs, deb), join(dir, 'busybox')]);
  return readFileSync(join(dir, 'busybox', 'bin', 'busybox'));
}

/** The tiny image's initramfs with a second archive on top that makes ttyS0 a login console. */
export async function loginInitrd(dir: string): Promise<string> {
  const tiny = await buildImage('tiny');
  const overlay = join(dir, 'login.cpio');
  // A prompt as colourful as a distribution's: colours, a window title, bracketed paste on.
  const profile =
    'PS1="$(printf \'\\033]0;%s\\007\\033[?2004h\\033[1;32m%s@%s\\033[0m:\\033[1;34m%s\\033[0m$ \' "$USER@$(hostname)" "$USER" "$(hostname)" \'~\')"\nexport PS1\n';
  await writeCpio(overlay, [
    { type: 'dir', path: 'etc' },
    {
      type: 'file',
      path: 'etc/inittab',
      data: Buffer.from('::sysinit:/etc/vmkit/rc.sh\nttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100\n'),
    },
    {
      type: 'file',
      path: 'etc/passwd',
      data: Buffer.from('root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:alice:/home/alice:/bin/sh\n'),
    },
    { type: 'file', path: 'etc/group', data: Buffer.from('root:x:0:\nalice:x:1000:\n') },
    {
      type: 'file',
      path: 'etc/shadow',
      mode: 0o600,
      data: Buffer.from(
        `root:${hash(ROOT_PASSWORD)}:19000::::::\nalice:${hash(USER.password)}:19000::::::\n`,
      ),
    },
    { type: 'file', path: 'etc/issue', data: Buffer.from('vmkit login target\n\n') },
    { type: 'dir', path: 'root', mode: 0o700 },
    { type: 'dir', path: 'home' },
    { type: 'dir', path: 'home/alice' },
    { type: 'file', path: 'home/alice/.profile', data: Buffer.from(profile) },
    { type: 'dir', path: 'bin' },
    { type: 'file', path: 'bin/busybox', mode: 0o4755, data: busybox(dir) },
  ]);
  const combined = join(dir, 'initrd-login.cpio');
  writeFileSync(combined, Buffer.concat([readFileSync(tiny.initrd), readFileSync(overlay)]));
  return combined;
}

const GRUB_SERIAL = 'serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial\n';

/**
 * A GRUB rescue image (an isohybrid: it boots as a CD and, under BIOS, as a disk) holding the
 * tiny kernel and `initrds` in /boot, whose menu is `entries` (`linux`/`initrd` lines per title).
 * `biosOnly` leaves out the UEFI loader (a smaller image).
 */
async function grubRescue(
  dir: string,
  name: string,
  menu: { timeout: number; entries: Array<{ title: string; append: string }> },
  options: { initrds?: Record<string, Buffer>; biosOnly?: boolean } = {},
): Promise<string> {
  const tiny = await buildImage('tiny');
  const root = join(dir, `${name}-root`);
  mkdirSync(join(root, 'boot', 'grub'), { recursive: true });
  writeFileSync(join(root, 'boot', 'vmlinuz'), readFileSync(tiny.kernel));
  const initrds: Record<string, Buffer> = { 'initrd.cpio': readFileSync(tiny.initrd), ...options.initrds };
  for (const [file, data] of Object.entries(initrds)) writeFileSync(join(root, 'boot', file), data);
  const initrdLine = Object.keys(initrds)
    .map((file) => `/boot/${file}`)
    .join(' ');
  const entry = ({ title, append }: { title: string; append: string }) =>
    `menuentry '${title}' {\n  linux /boot/vmlinuz ${tiny.cmdline}${append}\n  initrd ${initrdLine}\n}\n`;
  writeFileSync(
    join(root, 'boot', 'grub', 'grub.cfg'),
    `${GRUB_SERIAL}set timeout=${menu.timeout}\n${menu.entries.map(entry).join('')}`,
  );
  const image = join(dir, name);
  const platform = options.biosOnly ? ['-d', '/usr/lib/grub/i386-pc'] : [];
  execFileSync('grub-mkrescue', [...platform, '-o', image, root], { stdio: 'ignore' });
  return image;
}

/** A GRUB rescue ISO (BIOS and UEFI) with two entries booting the tiny kernel over ttyS0. */
export function grubIso(dir: string): Promise<string> {
  return grubRescue(dir, 'rescue.iso', {
    timeout: 60,
    entries: [
      { title: 'vmkit tiny', append: '' },
      { title: 'vmkit tiny (marked)', append: ' vmkit.mark=second' },
    ],
  });
}

/**
 * An "installed system" and its "installer": the system is a BIOS GRUB disk image booting tiny
 * with `vmkit.mark=installed`; the installer is an ISO booting tiny with the system image in its
 * initramfs at /install/system.img, for an install step on the console to write onto /dev/vda.
 * With `uefi` both boot under UEFI too (bigger: GRUB's EFI loader in each).
 */
export async function installerIso(
  dir: string,
  options: { uefi?: boolean } = {},
): Promise<{ iso: string; system: string }> {
  const biosOnly = !options.uefi;
  const system = await grubRescue(
    dir,
    'system.img',
    { timeout: 0, entries: [{ title: 'installed', append: ' vmkit.mark=installed' }] },
    { biosOnly },
  );
  const payload = join(dir, 'payload.cpio');
  await writeCpio(payload, [
    { type: 'dir', path: 'install' },
    { type: 'file', path: 'install/system.img', data: readFileSync(system) },
  ]);
  const iso = await grubRescue(
    dir,
    'installer.iso',
    { timeout: 0, entries: [{ title: 'installer', append: ' vmkit.mark=installer' }] },
    { initrds: { 'payload.cpio': readFileSync(payload) }, biosOnly },
  );
  return { iso, system };
}
