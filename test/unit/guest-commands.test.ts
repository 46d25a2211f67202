import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { posixCommands, procAddress } from '../../src/guest/profiles/commands.js';
import { foreignProfile, profileNamed } from '../../src/guest/profiles/index.js';
import { guestFilesDir } from '../../src/util/paths.js';

const dir = mkdtempSync(join(tmpdir(), 'vmkit-guest-commands-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Runs a guest script with the host's sh, its /proc and /etc paths pointed at files of the test. */
function run(script: string, files: Record<string, string>): number | null {
  let text = script;
  for (const [path, content] of Object.entries(files)) {
    const local = join(dir, path.replaceAll('/', '_'));
    writeFileSync(local, content);
    text = text.replaceAll(path, local);
  }
  return spawnSync('sh', ['-c', text]).status;
}

const TCP = [
  '  sl  local_address rem_address   st',
  '   0: 0100007F:1F90 00000000:0000 0A', // 127.0.0.1:8080, listening
  '   1: 00000000:0016 00000000:0000 0A', // *:22, listening
  '   2: 0100007F:0050 0100007F:9C40 01', // 127.0.0.1:80, a connection, not listening
].join('\n');
const proc = (text: string) => ({ '/proc/net/tcp6': '', '/proc/net/tcp': text });

describe('guest commands come from the files of guest/profiles/', () => {
  test('each profile runs them; drop caches, power-off and reboot are those files', () => {
    for (const profile of [profileNamed('tiny'), profileNamed('debian'), foreignProfile])
      assert.equal(profile.commands, posixCommands, profile.name);
    const file = (name: string) => readFileSync(join(guestFilesDir(), 'profiles', name), 'utf8');
    assert.equal(posixCommands.dropCaches(), file('drop-caches.sh'));
    assert.match(posixCommands.dropCaches(), /echo 3 > \/proc\/sys\/vm\/drop_caches/);
    assert.equal(posixCommands.powerOff(), file('power-off.sh'));
    assert.equal(posixCommands.reboot(), file('reboot.sh'));
    assert.equal(posixCommands.tcpListening(80), `set -- '0050'\n${file('tcp-listening.sh')}`);
  });

  test('the TCP probe: any address, or the address given and the wildcards', () => {
    const probe = (port: number, address?: string) =>
      run(posixCommands.tcpListening(port, address), proc(TCP));
    assert.equal(probe(8080), 0);
    assert.equal(probe(22), 0);
    assert.equal(probe(80), 1, 'a connection is not a listener');
    assert.equal(probe(8080, '127.0.0.1'), 0);
    assert.equal(probe(8080, 'localhost'), 0);
    assert.equal(probe(8080, '10.0.2.15'), 1, 'bound to another address');
    assert.equal(probe(22, '10.0.2.15'), 0, 'bound to every address');
    assert.equal(procAddress('127.0.0.1'), '0100007F');
    assert.equal(procAddress('::1'), '00000000000000000000000001000000');
  });

  test('the unix socket probe tells a listening stream socket from a bound datagram one', () => {
    const unix = [
      'Num       RefCount Protocol Flags    Type St Inode Path',
      '0000000000000000: 00000002 00000000 00010000 0001 01 1234 /run/a.sock',
      '0000000000000000: 00000002 00000000 00000000 0002 01 1235 /run/b.sock',
    ].join('\n');
    const probe = (path: string, datagram: boolean) =>
      run(posixCommands.unixListening(path, datagram), { '/proc/net/unix': unix });
    assert.equal(probe('/run/a.sock', false), 0);
    assert.equal(probe('/run/a.sock', true), 1);
    assert.equal(probe('/run/b.sock', true), 0);
    assert.equal(probe('/run/c.sock', false), 1);
  });

  test('ensureHosts adds only the lines /etc/hosts lacks', () => {
    const hosts = join(dir, '_etc_hosts');
    run(posixCommands.ensureHosts(['10.0.0.1 a', "10.0.0.2 o'b"]), {
      '/etc/hosts': '127.0.0.1 localhost\n10.0.0.1 a\n',
    });
    assert.equal(readFileSync(hosts, 'utf8'), "127.0.0.1 localhost\n10.0.0.1 a\n10.0.0.2 o'b\n");
  });
});
