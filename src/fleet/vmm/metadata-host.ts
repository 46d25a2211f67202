import { appendFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { METADATA_SPOOL, type MetadataDocument, metadataDocumentPath } from './metadata.js';

/**
 * The metadata endpoint, one process per connection: QEMU runs `metadata-host <instance dir>`
 * for each TCP connection the instance opens to the metadata address (a guestfwd rule on the
 * instance's own user-mode NIC), with the connection on stdin and stdout. It answers one HTTP
 * GET about that instance alone, from the document the fleet wrote into its folder
 * (metadata.ts): `/` (everything), `/identity`, `/pool`, `/secrets` (its tenant's). It runs
 * in the VMM's jail as the VMM's uid, so it sees that folder and nothing else of the fleet.
 */
const [dir] = process.argv.slice(2);

function respond(status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  const reason = status === 200 ? 'OK' : status === 404 ? 'Not Found' : 'Bad Request';
  process.stdout.write(
    `HTTP/1.0 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`,
  );
  process.stdout.end(() => process.exit(0));
}

let request = '';
process.stdin.on('data', (chunk: Buffer) => {
  request += chunk.toString('latin1');
  if (!request.includes('\r\n\r\n') && !request.includes('\n\n')) return;
  process.stdin.pause();
  const [method, target] = request.split(/\s+/);
  if (!dir || method !== 'GET' || !target) return respond(400, { error: 'GET only' });
  let document: MetadataDocument;
  try {
    document = JSON.parse(readFileSync(metadataDocumentPath(dir), 'utf8')) as MetadataDocument;
  } catch (error) {
    return respond(404, { error: `no metadata for this instance: ${(error as Error).message}` });
  }
  const documents: Record<string, unknown> = {
    '/': { identity: document.identity, pool: document.pool, secrets: document.secrets },
    '/identity': document.identity,
    '/pool': document.pool,
    '/secrets': document.secrets,
  };
  const path = target.replace(/\/+$/, '') || '/';
  const found = documents[path];
  const readsSecrets = path === '/' || path === '/secrets';
  const names = Object.keys(document.secrets).join(', ') || 'no secrets';
  // One line under PIPE_BUF with O_APPEND: whole even when connections overlap.
  appendFileSync(
    join(dir, METADATA_SPOOL),
    `${JSON.stringify({
      time: new Date().toISOString(),
      tenant: document.tenant,
      actor: `metadata endpoint (pid ${process.pid}, uid ${process.getuid?.()})`,
      action: readsSecrets ? 'secret.read' : 'metadata.read',
      target: document.path,
      outcome: found === undefined ? 'refused' : 'ok',
      detail: `GET ${target.slice(0, 200)}${readsSecrets ? ` (${names})` : ''}`,
    })}\n`,
  );
  if (found === undefined) respond(404, { error: `no ${target}`, paths: Object.keys(documents) });
  else respond(200, found);
});
process.stdin.on('end', () => {
  if (!request) process.exit(0);
});
setTimeout(() => process.exit(1), 10_000).unref();
