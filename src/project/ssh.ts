import { chmodSync, existsSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, GuestSetupError } from '../errors.js';
import { runTool } from '../util/exec.js';
import { guestFilesDir } from '../util/paths.js';
import { ensurePrivateDir } from '../util/private.js';
import { shellQuote } from '../util/shell.js';
import type { HubClient } from './hub-client.js';
import { sshGuestPort } from './ports.js';
import { readState, writeFileAtomic } from './state.js';
import type { ProjectVm } from './vm-handle.js';

/** How long `vmkit ssh` and rsync wait for the guest's sshd to listen (it starts late in a boot). */
export const SSHD_WAIT_S = 180;

/** vmkit's OpenSSH files for one VM, in `.vmkit/<vm>/ssh/`. */
export function sshFiles(pvm: ProjectVm) {
  const dir = join(pvm.dir, 'ssh');
  return {
    dir,
    key: join(dir, 'id_ed25519'),
    knownHosts: join(dir, 'known_hosts'),
    config: join(dir, 'config'),
    /** The name ssh knows the VM by, in the config and in known_hosts (the forwarded port may change). */
    host: `vmkit-${pvm.vm.name}`,
  };
}

export class NoSshdError extends ConfigError {
  override name = 'NoSshdError';
  constructor(pvm: ProjectVm) {
    super(
      `VM ${pvm.vm.name}: this VM's image (${pvm.vm.image}) has no sshd; use vmkit shell ${pvm.vm.name} or an image with openssh-server (examples/project-vm/debian-ssh.json)`,
    );
  }
}

/** The VM's client key pair (ed25519, private key mode 0600), made with ssh-keygen on first use; returns the public key. */
export async function ensureClientKey(pvm: ProjectVm): Promise<string> {
  const { dir, key } = sshFiles(pvm);
  if (!existsSync(key)) {
    ensurePrivateDir(dir);
    const partial = `${key}.${process.pid}.part`;
    await runTool(
      'ssh-keygen',
      ['-q', '-t', 'ed25519', '-N', '', '-C', `vmkit-${pvm.vm.name}`, '-f', partial],
      {
        timeoutMs: 30_000,
      },
    );
    // The public key first: a crash never leaves a private key without its public one.
    renameSync(`${partial}.pub`, `${key}.pub`);
    renameSync(partial, key);
  }
  chmodSync(key, 0o600);
  return readFileSync(`${key}.pub`, 'utf8').trim();
}

export interface GuestSsh {
  sshd: boolean;
  rsync: boolean;
  /** The guest's host public keys ("type base64"), read through the agent. */
  hostKeys: string[];
}

/**
 * Reports whether the image has sshd and rsync and, with `authorize`, authorizes the VM's key for
 * root in the guest, through the agent. With `wait` too, waits for sshd to listen and reads its
 * host keys.
 */
export async function guestSshSetup(
  hub: HubClient,
  pvm: ProjectVm,
  { authorize, wait }: { authorize: boolean; wait: boolean },
): Promise<GuestSsh> {
  const publicKey = authorize ? await ensureClientKey(pvm) : '';
  const script = readFileSync(join(guestFilesDir(), 'project', 'ssh-setup.sh'), 'utf8');
  const args = [publicKey, wait ? 'wait' : 'install', String(SSHD_WAIT_S), String(sshGuestPort(pvm.vm))];
  const result = await hub.run(
    `set -- ${args.map(shellQuote).join(' ')}\n${script}`,
    (SSHD_WAIT_S + 30) * 1000,
  );
  const lines = result.stdout.toString().split('\n');
  if (result.status !== 0) {
    throw new GuestSetupError(
      `VM ${pvm.vm.name}: preparing ssh in the guest failed (status ${result.status}): ${result.stderr.toString().trim()}`,
    );
  }
  return {
    sshd: lines.includes('sshd'),
    rsync: lines.includes('rsync'),
    hostKeys: lines.filter((line) => line.startsWith('hostkey ')).map((line) => line.slice(8).trim()),
  };
}

const quoted = (path: string) => `"${path}"`;

/**
 * Writes the VM's known_hosts (the host keys read through the agent, pinned: no first-use trust)
 * and an OpenSSH config naming the forwarded port, the key and that file. Returns the config.
 */
export function writeSshConfig(pvm: ProjectVm, hostKeys: string[]): string {
  const files = sshFiles(pvm);
  const port = readState(pvm.dir).ports[String(sshGuestPort(pvm.vm))];
  if (port === undefined) {
    throw new ConfigError(
      `VM ${pvm.vm.name} has no forwarded ssh port (run vmkit down ${pvm.vm.name} and vmkit up)`,
    );
  }
  if (hostKeys.length === 0) {
    throw new GuestSetupError(`VM ${pvm.vm.name}: its sshd listens but no host key is readable in /etc/ssh`);
  }
  if (/["\n]/.test(files.dir))
    throw new ConfigError(`ssh: the project path cannot be quoted for ssh: ${files.dir}`);
  writeFileAtomic(files.knownHosts, hostKeys.map((key) => `${files.host} ${key}\n`).join(''));
  const config = [
    `# Written by vmkit for VM ${pvm.vm.name} of ${pvm.project.root}; rewritten on each vmkit ssh.`,
    `Host ${files.host}`,
    '  HostName 127.0.0.1',
    `  Port ${port}`,
    '  User root',
    `  IdentityFile ${quoted(files.key)}`,
    '  IdentitiesOnly yes',
    '  IdentityAgent none',
    `  HostKeyAlias ${files.host}`,
    `  UserKnownHostsFile ${quoted(files.knownHosts)}`,
    '  GlobalKnownHostsFile /dev/null',
    '  StrictHostKeyChecking yes',
    '  UpdateHostKeys no',
    '  BatchMode yes',
    '  ConnectTimeout 30',
    '  ServerAliveInterval 15',
    '',
  ].join('\n');
  writeFileAtomic(files.config, config);
  return files.config;
}

/** Everything `ssh -F <config> <host>` needs, made ready: the key installed, sshd up, its keys pinned. */
export async function prepareSsh(
  hub: HubClient,
  pvm: ProjectVm,
): Promise<{ config: string; host: string; rsync: boolean }> {
  const guest = await guestSshSetup(hub, pvm, { authorize: true, wait: true });
  if (!guest.sshd) throw new NoSshdError(pvm);
  return { config: writeSshConfig(pvm, guest.hostKeys), host: sshFiles(pvm).host, rsync: guest.rsync };
}

/**
 * At `up`: when the image has an sshd (perhaps installed by provisioning), vmkit's key is
 * authorized for root. Says why when that fails (no ssh-keygen here) instead of failing the boot.
 */
export async function authorizeAtUp(
  hub: HubClient,
  pvm: ProjectVm,
  log: (line: string) => void,
): Promise<void> {
  if (!(await guestSshSetup(hub, pvm, { authorize: false, wait: false })).sshd) return;
  await guestSshSetup(hub, pvm, { authorize: true, wait: false }).catch((error: Error) =>
    log(`VM ${pvm.vm.name}: vmkit ssh will not work yet: ${error.message}`),
  );
}
