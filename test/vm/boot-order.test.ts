// bootOrder with media you bring, on real firmware (SeaBIOS and OVMF): an installer ISO and an
// empty disk. The installer writes a bootable system onto the disk and reboots the guest. With
// the disk first, the firmware passes over the empty disk to the CD, and after the reboot boots
// the installed system; with the CD first (the default) it boots the installer again.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type BootDevice, type Firmware, startMachine } from '../../src/index.js';
import { lacks } from '../helpers.js';
import { installerIso } from './console-targets.js';

const OVMF = '/usr/share/OVMF/OVMF_CODE_4M.fd';
const UP = 'vmkit: tiny image up';

describe('boot order with media you bring', { skip: lacks('consoleInput'), timeout: 1_200_000 }, () => {
  let dir: string;
  const media: Partial<Record<Firmware, { iso: string; system: string }>> = {};

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'vmkit-boot-order-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** The kernel command lines of the first boot and of the boot after the install rebooted. */
  async function installAndReboot(firmware: Firmware, bootOrder?: BootDevice[]): Promise<[string, string]> {
    if (!media[firmware]) {
      mkdirSync(join(dir, firmware));
      media[firmware] = await installerIso(join(dir, firmware), { uefi: firmware === 'uefi' });
    }
    await using vm = await startMachine({
      name: `order-${firmware}`,
      image: { iso: media[firmware].iso },
      firmware,
      ...(bootOrder ? { bootOrder } : {}),
      // OVMF keeps more memory to itself: GRUB under UEFI cannot load the installer's initrd in 256 MiB.
      memoryMiB: firmware === 'uefi' ? 512 : 256,
      disks: [{ sizeMiB: 64 }],
      allowReboot: true,
      readyWhen: UP,
      timeoutMs: 300_000,
    });
    const first = await (await vm.consoleShell()).succeed('cat /proc/cmdline');
    if (/vmkit\.mark=installer/.test(first)) {
      await (await vm.consoleShell()).succeed(
        'dd if=/install/system.img of=/dev/vda bs=1M conv=fsync 2>/dev/null && sync',
        { timeoutMs: 120_000 },
      );
    }
    vm.console.consume();
    vm.console.sendLine('reboot -f');
    // The stream, not the screen: the screen still shows the first boot's line until it scrolls.
    await vm.console.expect(UP, { timeoutMs: 300_000, on: 'stream' });
    const second = await (await vm.consoleShell()).succeed('cat /proc/cmdline');
    return [first, second];
  }

  for (const firmware of ['bios', 'uefi'] as const) {
    const skip = firmware === 'uefi' && !existsSync(OVMF) ? 'no OVMF (apt-get install ovmf)' : false;

    it(`${firmware}: bootOrder [disk, cdrom] passes over the empty disk to the installer, then boots what it installed`, {
      skip,
    }, async () => {
      const [first, second] = await installAndReboot(firmware, ['disk', 'cdrom']);
      assert.match(first, /vmkit\.mark=installer/, 'the first boot (empty disk) is the CD');
      assert.match(second, /vmkit\.mark=installed/, 'after the install the disk boots first');
    });

    it(`${firmware}: the default order (CD first) boots the installer again after the install`, {
      skip,
    }, async () => {
      const [first, second] = await installAndReboot(firmware);
      assert.match(first, /vmkit\.mark=installer/);
      assert.match(second, /vmkit\.mark=installer/, 'the CD comes first, installed disk or not');
    });
  }
});
