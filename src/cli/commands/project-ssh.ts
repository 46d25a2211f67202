import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, VmkitError } from '../../errors.js';
import { readState } from '../../project/state.js';
import { connectHub, type ProjectVm } from '../../project/vm-handle.js';
import { runTool } from '../../util/exec.js';
import { shellQuote } from '../../util/shell.js';

const keyPath = (pvm: ProjectVm) => join(pvm.dir, 'ssh', 'id_ed25519');

/** An ed25519 key pair of vmkit's own in `.vmkit/<vm>/ssh/`, made on first use. */
async function ensureKey(pvm: ProjectVm): Promise<string> {
  const key = keyPath(pvm);
  if (!existsSync(key)) {
    mkdirSync(join(pvm.dir, 'ssh'), { recursive: true, mode: 0o700 });
    await runTool('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `vmkit-${pvm.vm.name}`, '-f', key]);
  }
  return readFileSync(`${key}.pub`, 'utf8').trim();
}

/** Installs vmkit's key for root in the guest and runs OpenSSH on the forwarded port. */
export async function sshCommand(pvm: ProjectVm, args: string[]): Promise<number> {
  if (pvm.vm.sshPort === undefined) {
    throw new ConfigError(
      `VM ${pvm.vm.name} has no sshPort in ${pvm.project.file} (add "sshPort": 22; or use vmkit shell)`,
    );
  }
  const hub = await connectHub(pvm);
  try {
    const probe = await hub.run('command -v sshd || test -x /usr/sbin/sshd', 10_000);
    if (probe.status !== 0) {
      throw new VmkitError(
        `the image of VM ${pvm.vm.name} (${pvm.vm.image}) has no sshd; use vmkit shell ${pvm.vm.name} (or an image with openssh-server)`,
      );
    }
    const publicKey = await ensureKey(pvm);
    await hub.succeed(
      `mkdir -p /root/.ssh && chmod 700 /root/.ssh && touch /root/.ssh/authorized_keys && (grep -qxF ${shellQuote(publicKey)} /root/.ssh/authorized_keys || echo ${shellQuote(publicKey)} >> /root/.ssh/authorized_keys) && chmod 600 /root/.ssh/authorized_keys`,
    );
  } finally {
    hub.close();
  }
  const port = readState(pvm.dir).ports[String(pvm.vm.sshPort)];
  if (port === undefined)
    throw new VmkitError(`VM ${pvm.vm.name} has no forwarded ssh port (run vmkit down and vmkit up)`);
  const child = spawn(
    'ssh',
    [
      '-i',
      keyPath(pvm),
      '-p',
      String(port),
      '-o',
      'StrictHostKeyChecking=accept-new',
      '-o',
      `UserKnownHostsFile=${join(pvm.dir, 'ssh', 'known_hosts')}`,
      '-o',
      'IdentitiesOnly=yes',
      'root@127.0.0.1',
      ...args,
    ],
    { stdio: 'inherit' },
  );
  return new Promise((resolve, reject) => {
    child.once('error', (error) =>
      reject(new VmkitError(`cannot run ssh: ${error.message} (install openssh-client)`)),
    );
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}
