import { audit } from './audit.js';
import { FleetStore } from './store.js';

/**
 * The metadata endpoint, one process per connection: QEMU runs `metadata-host <fleet dir> <seq>`
 * for each TCP connection the instance opens to the metadata address (a guestfwd rule on the
 * instance's own user-mode NIC), with the connection on stdin and stdout. It answers one HTTP
 * GET about that instance alone: `/` (everything), `/identity`, `/pool`, `/secrets` (its tenant's).
 */
const [fleetDir, seqText] = process.argv.slice(2);

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
  if (!fleetDir || !seqText || method !== 'GET' || !target) return respond(400, { error: 'GET only' });
  const store = new FleetStore(fleetDir);
  try {
    const instance = store.instanceBySeq(Number(seqText));
    const tenant = store.tenant(instance.tenant);
    const pool = store.pool(instance.tenant, instance.pool);
    const identity = {
      id: instance.id,
      path: instance.path,
      tenant: tenant.id,
      pool: pool.id,
      address: instance.address,
      mac: instance.mac,
    };
    const poolInfo = {
      id: pool.id,
      image: pool.image,
      revision: pool.revision,
      vcpus: pool.vcpus,
      memoryMiB: pool.memoryMiB,
    };
    const documents: Record<string, unknown> = {
      '/': { identity, pool: poolInfo, secrets: tenant.secrets },
      '/identity': identity,
      '/pool': poolInfo,
      '/secrets': tenant.secrets,
    };
    const path = target.replace(/\/+$/, '') || '/';
    const document = documents[path];
    const readsSecrets = path === '/' || path === '/secrets';
    audit(fleetDir, {
      tenant: tenant.id,
      actor: `metadata endpoint (pid ${process.pid})`,
      action: readsSecrets ? 'secret.read' : 'metadata.read',
      target: instance.path,
      outcome: document === undefined ? 'refused' : 'ok',
      detail: `GET ${target}${readsSecrets ? ` (${Object.keys(tenant.secrets).join(', ') || 'no secrets'})` : ''}`,
    });
    if (document === undefined) respond(404, { error: `no ${target}`, paths: Object.keys(documents) });
    else respond(200, document);
  } catch (error) {
    respond(404, { error: (error as Error).message });
  } finally {
    store.close();
  }
});
process.stdin.on('end', () => {
  if (!request) process.exit(0);
});
setTimeout(() => process.exit(1), 10_000).unref();
