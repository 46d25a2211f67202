import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { HostToolError } from '../../errors.js';
import { prepareSsh } from '../../project/ssh.js';
import { type ProjectVm, withHub } from '../../project/vm-handle.js';

/** Makes ssh ready through the agent: vmkit's key authorized, sshd listening, its host keys pinned. */
function ready(pvm: ProjectVm): Promise<{ config: string; host: string }> {
  return withHub(pvm, (hub) => prepareSsh(hub, pvm));
}

/**
 * Runs the real `ssh` client on the VM's forwarded sshd port; `command` (words joined by ssh and
 * run by root's login shell in the guest, as ssh does) or, without one, an interactive login.
 * Resolves with ssh's exit status: the remote command's, or 255 when ssh itself failed.
 */
export async function sshCommand(pvm: ProjectVm, command: string[]): Promise<number> {
  const { config, host } = await ready(pvm);
  const child = spawn('ssh', ['-F', config, host, ...(command.length > 0 ? ['--', ...command] : [])], {
    stdio: 'inherit',
  });
  // The terminal's Ctrl-C reaches ssh itself (same process group); a SIGTERM sent to vmkit is passed on.
  const ignore = () => {};
  const forward = () => child.kill('SIGTERM');
  process.on('SIGINT', ignore);
  process.on('SIGTERM', forward);
  try {
    return await new Promise<number>((resolve, reject) => {
      child.once('error', (error) =>
        reject(new HostToolError(`cannot run ssh: ${error.message} (install openssh-client)`)),
      );
      child.once('exit', (code, signal) => resolve(code ?? 128 + (signal ? constants.signals[signal] : 1)));
    });
  } finally {
    process.off('SIGINT', ignore);
    process.off('SIGTERM', forward);
  }
}

/** The VM's OpenSSH config, made ready, with a line saying how to use it. */
export async function sshConfigCommand(pvm: ProjectVm): Promise<string> {
  const { config, host } = await ready(pvm);
  return `# ssh -F ${config} ${host}   |   rsync -e 'ssh -F ${config}' ... ${host}:/path\n${readFileSync(config, 'utf8')}`;
}
