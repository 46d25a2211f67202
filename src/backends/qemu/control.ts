import { QmpError } from '../../errors.js';
import type { ExtraDisk, VmmControl, VmmEvent, WriteStateOptions } from '../backend.js';
import { HOST_NETDEV, NIC_ID } from './args.js';
import { cancelMigrationAndResume, migrateIn, migrateOut } from './migration.js';
import type { QmpClient } from './qmp.js';

/**
 * What vmkit asks of a running QEMU, over its QMP: shared by the QEMU vmkit launched
 * (QemuProcess) and a detached one it attached to (AttachedQemu).
 */
export class QemuControl implements VmmControl {
  constructor(readonly qmp: QmpClient) {}

  get monitor(): QmpClient {
    return this.qmp;
  }

  async pause(): Promise<void> {
    await this.qmp.execute('stop');
  }

  async resume(): Promise<void> {
    await this.qmp.execute('cont');
  }

  async status(): Promise<string> {
    return (await this.qmp.execute<{ status: string }>('query-status')).status;
  }

  async quit(): Promise<void> {
    await this.qmp.execute('quit').catch(() => {});
  }

  async powerDown(): Promise<void> {
    await this.qmp.execute('system_powerdown');
  }

  writeState(path: string, options: WriteStateOptions): Promise<void> {
    return migrateOut(this.qmp, path, {
      ignoreShared: options.ramShared,
      timeoutMs: options.timeoutMs,
      what: options.what,
    });
  }

  readState(path: string, options: { ramShared: boolean; timeoutMs: number }): Promise<void> {
    return migrateIn(this.qmp, path, { ignoreShared: options.ramShared, timeoutMs: options.timeoutMs });
  }

  abortWriteState(timeoutMs?: number): Promise<void> {
    return cancelMigrationAndResume(this.qmp, timeoutMs);
  }

  async setLinkUp(index: number, up: boolean): Promise<void> {
    await this.qmp.execute('set_link', { name: NIC_ID(index), up });
  }

  async addPortForward(hostPort: number, guestPort: number): Promise<void> {
    await this.humanChecked(`hostfwd_add ${HOST_NETDEV} tcp:127.0.0.1:${hostPort}-:${guestPort}`);
  }

  async removePortForward(hostPort: number): Promise<void> {
    await this.humanChecked(`hostfwd_remove ${HOST_NETDEV} tcp:127.0.0.1:${hostPort}`);
  }

  humanCommand(line: string, timeoutMs: number): Promise<string> {
    return this.qmp.execute<string>('human-monitor-command', { 'command-line': line }, timeoutMs);
  }

  onReset(listener: () => void): () => void {
    const onEvent = (event: VmmEvent) => {
      if (event.event === 'RESET') listener();
    };
    this.qmp.on('event', onEvent);
    return () => this.qmp.off('event', onEvent);
  }

  async setRebootAction(action: 'reset' | 'shutdown'): Promise<void> {
    await this.qmp.execute('set-action', { reboot: action });
  }

  async screendump(path: string, timeoutMs: number): Promise<void> {
    await this.qmp.execute('screendump', { filename: path }, timeoutMs);
  }

  /**
   * The disk's file as a block node, then a virtio disk on it: the guest's ACPI PCI hotplug finds
   * it. A device QEMU refuses leaves no node behind.
   */
  async attachDisk(disk: ExtraDisk & { id: string }, timeoutMs: number): Promise<void> {
    const node = `${disk.id}.node`;
    const readOnly = disk.readOnly ?? false;
    await this.qmp.execute(
      'blockdev-add',
      {
        driver: disk.format,
        'node-name': node,
        'read-only': readOnly,
        file: { driver: 'file', filename: disk.path, 'read-only': readOnly },
      },
      timeoutMs,
    );
    try {
      await this.qmp.execute(
        'device_add',
        { driver: 'virtio-blk-pci', drive: node, id: disk.id, serial: disk.serial },
        timeoutMs,
      );
    } catch (error) {
      await this.qmp.execute('blockdev-del', { 'node-name': node }, timeoutMs).catch(() => {});
      throw error;
    }
  }

  async sendKeys(keys: string[]): Promise<void> {
    await this.qmp.execute('send-key', { keys: keys.map((data) => ({ type: 'qcode', data })) });
  }

  /** A human-monitor command. HMP answers in prose: failures say so ("Could not ...", "invalid ..."). */
  private async humanChecked(command: string): Promise<void> {
    const output = (await this.humanCommand(command, 30_000)).trim();
    if (/could not|invalid|error|fail|not found|unknown/i.test(output)) {
      throw new QmpError('human-monitor-command', 'HmpError', `${command}: ${output}`);
    }
  }
}
