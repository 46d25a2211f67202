import { createHash } from 'node:crypto';
import { createWriteStream, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { ClusterError } from '../../errors.js';
import type { TunnelTls } from './tunnel.js';

/**
 * Calls between the agents of a cluster (a move's departure and arrival), over the same mutual
 * TLS as the API, with the agent's client certificate. Errors are ClusterErrors that name the
 * peer, the call and the answer.
 */

function tlsOf(tls: TunnelTls) {
  return { ca: readFileSync(tls.ca), cert: readFileSync(tls.cert), key: readFileSync(tls.key) };
}

/**
 * POSTs `body` as JSON to `path` of the agent at `url` and resolves with its JSON answer; `gone`,
 * asked every few seconds meanwhile, ends the wait early with the reason it gives (the peer died).
 */
export function peerPost<T>(
  url: string,
  path: string,
  body: unknown,
  tls: TunnelTls,
  timeoutMs: number,
  gone?: () => Promise<string | undefined>,
): Promise<T> {
  const target = new URL(path, url);
  const what = `POST ${target.href}`;
  let watch: NodeJS.Timeout | undefined;
  return new Promise<T>((resolve, reject) => {
    const outgoing = request(target, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      ...tlsOf(tls),
      timeout: timeoutMs,
    });
    if (gone)
      watch = setInterval(() => {
        gone().then(
          (reason) => {
            if (reason) outgoing.destroy(new ClusterError(`${what}: ${reason}`));
          },
          () => undefined, // etcd not answering says nothing about the peer
        );
      }, 2000);
    outgoing.on('timeout', () =>
      outgoing.destroy(new ClusterError(`${what}: no answer within ${timeoutMs / 1000} s`)),
    );
    outgoing.on('error', (error) =>
      reject(error instanceof ClusterError ? error : new ClusterError(`${what}: ${error.message}`)),
    );
    outgoing.on('response', (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('error', (error) => reject(new ClusterError(`${what}: ${error.message}`)));
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let answer: unknown;
        try {
          answer = JSON.parse(text);
        } catch {
          answer = undefined;
        }
        const status = response.statusCode ?? 0;
        if (status >= 200 && status < 300) return resolve(answer as T);
        const said = (answer as { error?: string } | undefined)?.error ?? text.slice(0, 500);
        reject(new ClusterError(`${what}: ${status}: ${said}`));
      });
    });
    outgoing.end(JSON.stringify(body));
  }).finally(() => clearInterval(watch));
}

/**
 * Downloads `path` of the agent at `url` into the file `to`, and checks that it has `bytes`
 * bytes with the sha256 `sha256`; a file that does not is removed.
 */
export function peerDownload(
  url: string,
  path: string,
  to: string,
  expect: { bytes: number; sha256: string },
  tls: TunnelTls,
  timeoutMs: number,
): Promise<void> {
  const target = new URL(path, url);
  const what = `GET ${target.href}`;
  return new Promise<void>((resolve, reject) => {
    const fail = (error: Error) => {
      rmSync(to, { force: true });
      reject(error instanceof ClusterError ? error : new ClusterError(`${what}: ${error.message}`));
    };
    const outgoing = request(target, { method: 'GET', ...tlsOf(tls), timeout: timeoutMs });
    outgoing.on('timeout', () =>
      outgoing.destroy(new ClusterError(`${what}: nothing for ${timeoutMs / 1000} s`)),
    );
    outgoing.on('error', fail);
    outgoing.on('response', (response) => {
      if (response.statusCode !== 200) {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          fail(
            new ClusterError(
              `${what}: ${response.statusCode}: ${Buffer.concat(chunks).toString('utf8').slice(0, 500)}`,
            ),
          ),
        );
        return;
      }
      const hash = createHash('sha256');
      let bytes = 0;
      response.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        bytes += chunk.length;
      });
      pipeline(response, createWriteStream(to, { mode: 0o600 })).then(() => {
        const sha256 = hash.digest('hex');
        if (bytes !== expect.bytes || sha256 !== expect.sha256)
          return fail(
            new ClusterError(
              `${what}: ${bytes} bytes with sha256 ${sha256}, expected ${expect.bytes} bytes with ${expect.sha256}`,
            ),
          );
        resolve();
      }, fail);
    });
    outgoing.end();
  });
}

/**
 * Downloads each of `files` from the agent at `url` (`pathOf(name)` its path there) into `dir`,
 * each checked against its size and digest.
 */
export async function downloadChecked(
  url: string,
  pathOf: (name: string) => string,
  files: Array<{ name: string; bytes: number; sha256: string }>,
  dir: string,
  tls: TunnelTls,
): Promise<void> {
  for (const file of files)
    await peerDownload(url, pathOf(file.name), join(dir, file.name), file, tls, 120_000);
}
