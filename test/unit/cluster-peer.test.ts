// The calls between a cluster's agents for a move with state: a file downloaded over mutual TLS is
// kept only with the size and digest it was announced with; a POST whose peer is gone stops
// waiting; a data disk that arrives must be a qcow2 image that reads nothing else of the host.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ClusterError, ImageError } from '../../src/errors.js';
import { certPath, initCerts, keyPath } from '../../src/fleet/agent/certs.js';
import { peerDownload, peerPost } from '../../src/fleet/cluster/peer.js';
import { checkStandaloneQcow2 } from '../../src/util/qcow2.js';

const dir = mkdtempSync(join(tmpdir(), 'vmkit-peer-'));
const certs = join(dir, 'certs');
const tls = { ca: certPath(certs, 'ca'), cert: certPath(certs, 'client'), key: keyPath(certs, 'client') };
const CONTENT = Buffer.from('guest RAM, device state or a data disk\n');
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe('calls between agents', () => {
  let server: Server;
  let url = '';
  before(async () => {
    await initCerts(certs, { ca: true });
    server = createServer(
      {
        key: readFileSync(keyPath(certs, 'server')),
        cert: readFileSync(certPath(certs, 'server')),
        ca: readFileSync(certPath(certs, 'ca')),
        requestCert: true,
        rejectUnauthorized: true,
      },
      (request, response) => {
        if (request.url === '/file') return response.end(CONTENT);
        if (request.url === '/never') return; // a peer that stopped answering
        response.statusCode = 404;
        response.end('{"error":"no such file here"}');
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a download is kept only with the announced size and digest', async () => {
    const to = join(dir, 'got');
    await peerDownload(url, '/file', to, { bytes: CONTENT.length, sha256: sha256(CONTENT) }, tls, 10_000);
    assert.deepEqual(readFileSync(to), CONTENT);
    const wrong = join(dir, 'wrong');
    await assert.rejects(
      peerDownload(
        url,
        '/file',
        wrong,
        { bytes: CONTENT.length, sha256: sha256(Buffer.from('x')) },
        tls,
        10_000,
      ),
      (error: Error) =>
        error instanceof ClusterError &&
        error.message.includes(`${CONTENT.length} bytes with sha256 ${sha256(CONTENT)}, expected`),
    );
    assert.equal(existsSync(wrong), false, 'a file that does not match is removed');
    await assert.rejects(
      peerDownload(url, '/missing', join(dir, 'missing'), { bytes: 1, sha256: '0'.repeat(64) }, tls, 10_000),
      /GET https:\/\/127\.0\.0\.1:\d+\/missing: 404: \{"error":"no such file here"\}/,
    );
  });

  test('a POST whose peer is gone stops waiting, with the reason', async () => {
    const began = Date.now();
    await assert.rejects(
      peerPost(url, '/never', {}, tls, 60_000, async () => 'node nb died during the move (its lease lapsed)'),
      /POST https:\/\/127\.0\.0\.1:\d+\/never: node nb died during the move \(its lease lapsed\)/,
    );
    assert.ok(Date.now() - began < 10_000, `took ${Date.now() - began} ms`);
  });

  test('a data disk that arrives must stand alone: no backing file, no external data file', () => {
    const header = (backingOffset: bigint, incompatible: bigint) => {
      const bytes = Buffer.alloc(104);
      bytes.writeUInt32BE(0x514649fb, 0);
      bytes.writeUInt32BE(3, 4);
      bytes.writeBigUInt64BE(backingOffset, 8);
      bytes.writeBigUInt64BE(incompatible, 72);
      return bytes;
    };
    const disk = join(dir, 'data.qcow2');
    writeFileSync(disk, header(0n, 0n));
    checkStandaloneQcow2(disk, 'the data disk');
    writeFileSync(disk, header(0x200n, 0n));
    assert.throws(() => checkStandaloneQcow2(disk, 'the data disk'), /names a backing file/);
    writeFileSync(disk, header(0n, 4n));
    assert.throws(() => checkStandaloneQcow2(disk, 'the data disk'), /names an external data file/);
    writeFileSync(disk, 'not an image at all, but long enough to hold a header of eighty bytes ......');
    assert.throws(
      () => checkStandaloneQcow2(disk, 'the data disk'),
      (error: Error) => error instanceof ImageError && /not a qcow2 image/.test(error.message),
    );
  });
});
