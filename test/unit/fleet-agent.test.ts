// The fleet agent over real HTTPS with mutual TLS and certificates made by the openssl CLI,
// against a real fleet folder (no guests: test/vm/fleet-agent.test.ts drives instances).
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { get as httpsGet } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { ConfigError } from '../../src/errors.js';
import {
  type CertOptions,
  certPath,
  certStatus,
  initCerts,
  issueCert,
  keyPath,
  rotateCerts,
} from '../../src/fleet/agent/certs.js';
import { AgentCallError, connectAgent } from '../../src/fleet/agent/client.js';
import { type AgentServer, startAgent } from '../../src/fleet/agent/server.js';
import { Fleet } from '../../src/fleet/fleet.js';

const root = mkdtempSync(join(tmpdir(), 'vmkit-agent-'));
const certs = join(root, 'certs');
const desired = join(root, 'fleet.json');
const logs: string[] = [];
const waiters: Array<{ pattern: RegExp; resolve: () => void }> = [];
const log = (line: string) => {
  logs.push(line);
  for (const w of waiters.splice(0))
    if (w.pattern.test(line)) w.resolve();
    else waiters.push(w);
};
/** Resolves when the agent logs a line matching `pattern` (after this call). */
const logged = (pattern: RegExp, timeoutMs = 10_000) =>
  new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`agent never logged ${pattern}; last: ${logs.slice(-5).join(' | ')}`)),
      timeoutMs,
    );
    waiters.push({
      pattern,
      resolve: () => {
        clearTimeout(timer);
        resolve();
      },
    });
  });

// How a client sees the server refusing its certificate (TLS 1.3: an alert after the handshake); the
// agent's log, checked too, says why.
const REFUSED = /certificate|alert|socket hang up|ECONNRESET/i;
const clientFiles = (dir: string) => ({
  ca: certPath(certs, 'ca'),
  cert: certPath(dir, 'client'),
  key: keyPath(dir, 'client'),
});
const writeDoc = (sampleMs?: number) =>
  writeFileSync(
    desired,
    JSON.stringify({
      version: 1,
      tenants: [{ id: 'acme', subnet: '10.81.0.0/24' }],
      pools: [{ tenant: 'acme', id: 'web' }],
      ...(sampleMs ? { sleepPolicy: { sampleMs } } : {}),
    }),
  );

/** The serial of the certificate the server presents to a new connection. */
/** A serial number as hex without leading zeros: TLS keeps a zero byte that X509Certificate drops (1 serial in 16). */
const sameSerial = (serial: string) => serial.toUpperCase().replace(/^0+/, '');

function serverSerial(server: AgentServer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect(
      { host: '127.0.0.1', port: server.port, ...readClient(certs), servername: 'localhost' },
      () => {
        resolve(sameSerial(socket.getPeerCertificate().serialNumber));
        socket.end();
      },
    );
    socket.on('error', reject);
  });
}
const readClient = (dir: string) => ({
  ca: readFileSync(certPath(certs, 'ca')),
  cert: readFileSync(certPath(dir, 'client')),
  key: readFileSync(keyPath(dir, 'client')),
});

describe('the fleet agent over mutual TLS', { timeout: 120_000 }, () => {
  let server: AgentServer;
  before(async () => {
    await initCerts(certs, { ca: true });
    writeDoc();
    server = await startAgent({
      fleetDir: join(root, 'fleet'),
      certsDir: certs,
      desiredFile: desired,
      port: 0,
      bodyLimit: 4096,
      requestTimeoutMs: 1500,
      log,
    });
  });
  after(async () => {
    await server?.close();
    rmSync(root, { recursive: true, force: true });
  });

  test('certificates: keys 0600, status with dates, chained to the CA', () => {
    for (const role of ['ca', 'server', 'client'] as const)
      assert.equal(statSync(keyPath(certs, role)).mode & 0o777, 0o600);
    const status = certStatus(certs);
    assert.deepEqual(
      status.map((s) => [s.role, s.present, s.signedByCa, s.expired]),
      [
        ['ca', true, true, false],
        ['server', true, true, false],
        ['client', true, true, false],
      ],
    );
    assert.ok((status[1]?.daysLeft ?? 0) >= 89);
    // ECDSA P-256; the CA for 10 years, the others for 90 days by default.
    const DAY_MS = 86_400_000;
    for (const [role, days] of [
      ['ca', 3650],
      ['server', 90],
      ['client', 90],
    ] as const) {
      const cert = new X509Certificate(readFileSync(certPath(certs, role)));
      assert.equal(cert.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1', role);
      const lifetime = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / DAY_MS;
      assert.ok(Math.abs(lifetime - days) <= 1, `${role}: ${lifetime} days`);
    }
  });

  test('a client with the right certificate reconciles and lists; OpenAPI is served', async () => {
    using client = await connectAgent({ url: server.url, ...clientFiles(certs) });
    const report = await client.reconcile();
    assert.deepEqual(
      report.phases.flatMap((p) => p.actions.map((a) => `${a.action} ${a.target}`)),
      ['create acme', 'create acme/web'],
    );
    assert.equal((await client.reconcile()).changed, 0, 'a second reconcile changes nothing');
    assert.deepEqual(
      (await client.tenants()).map((t) => [t.id, t.pools]),
      [['acme', ['web']]],
    );
    assert.deepEqual(await client.instances({ tenant: 'acme' }), []);
    assert.equal(typeof (await client.nodeStats()).hostMemoryMiB, 'number');
    assert.equal((await client.nodeInfo()).fleetDir, join(root, 'fleet'));
    assert.deepEqual(
      (await client.audit('acme', { tail: 1 })).map((e) => e.action),
      ['pool.create'],
    );
    const doc = await client.openApi();
    assert.equal(doc.openapi, '3.0.3');
    assert.ok(Object.keys(doc.paths as object).includes('/v1/instances/{tenant}/{pool}/{instance}/exec'));
  });

  test('refused: no certificate, one from another CA, an expired one', async () => {
    const none = new Promise((resolve, reject) => {
      const request = httpsGet(
        `${server.url}/v1/node/stats`,
        { ca: readFileSync(certPath(certs, 'ca')), servername: '' },
        resolve,
      );
      request.on('error', reject);
    });
    await assert.rejects(none, REFUSED);
    const other = join(root, 'other');
    await initCerts(other, { ca: true });
    await assert.rejects(
      connectAgent({ url: server.url, ...clientFiles(other), ca: certPath(certs, 'ca') }),
      REFUSED,
    );
    const expired = join(root, 'expired');
    mkdirSync(expired);
    copyFileSync(certPath(certs, 'ca'), certPath(expired, 'ca'));
    copyFileSync(keyPath(certs, 'ca'), keyPath(expired, 'ca'));
    await issueCert(expired, 'client', { days: -1 });
    assert.equal(certStatus(expired)[2]?.expired, true);
    assert.equal(certStatus(expired)[2]?.signedByCa, true);
    await assert.rejects(connectAgent({ url: server.url, ...clientFiles(expired) }), REFUSED);
    assert.ok(
      logs.some((l) => /TLS client .* refused: no client certificate/.test(l)),
      logs.join('\n'),
    );
    assert.ok(
      logs.some((l) => /refused: CERT_HAS_EXPIRED/.test(l)),
      logs.join('\n'),
    );
    assert.ok(
      logs.some((l) => /refused: UNABLE_TO_VERIFY_LEAF_SIGNATURE/.test(l)),
      logs.join('\n'),
    );
  });

  test('bad requests get one-line errors and the agent keeps serving', async () => {
    using client = await connectAgent({ url: server.url, ...clientFiles(certs) });
    const status = async (call: Promise<unknown>) => {
      try {
        await call;
      } catch (error) {
        assert.ok(error instanceof AgentCallError, String(error));
        assert.ok(!error.message.includes('\n'));
        return `${error.statusCode} ${error.message}`;
      }
      assert.fail('accepted');
    };
    assert.match(
      await status(client.call('reconcile', { body: { prune: true, bogus: 1 } as never })),
      /^400 .*body: unknown option "bogus"/,
    );
    assert.match(
      await status(
        client.call('exec', {
          params: { tenant: 'acme', pool: 'web', instance: 'nope' },
          body: { command: [] },
        }),
      ),
      /^400 .*body: command: must name a program/,
    );
    assert.match(await status(client.wake('acme/web/nope')), /^404 .*no instance/);
    assert.match(await status(client.call('instances', { query: { tenant: 'Bad!' } })), /^400 /);
    assert.match(
      await status(client.call('instances', { query: { tenant: 'acme', pool: 'nope' } })),
      /^404 .*no pool acme\/nope/,
    );
    assert.match(
      await status(client.call('instances', { query: { pool: 'web' } })),
      /^400 .*pool needs tenant/,
    );
    assert.match(
      await status(
        client.call('exec', {
          params: { tenant: 'acme', pool: 'web', instance: 'x' },
          body: { command: ['x'.repeat(5000)] },
        }),
      ),
      /^413 /,
    );
    writeFileSync(
      desired,
      '{"version": 1, "tenants": [{"id": "acme", "subnet": "10.81.0.0/24", "count": -1}]}',
    );
    assert.match(await status(client.reconcile()), /^400 .*tenants\[0\]: unknown option "count"/);
    writeDoc();
    assert.equal((await client.reconcile()).failed, 0);
    // A refusal is 409: a Ready instance (never started) cannot go to sleep.
    const fleet = new Fleet({ dir: join(root, 'fleet') });
    try {
      const { path } = await fleet.createInstance('acme/web');
      assert.match(await status(client.sleep(path)), /^409 .*Ready/);
      await fleet.destroy(path);
    } finally {
      await fleet.close();
    }
  });

  test('request bodies are taken as they are: no coercion, ranges checked, NUL refused, __proto__ named', async () => {
    using client = await connectAgent({ url: server.url, ...clientFiles(certs) });
    const params = { tenant: 'acme', pool: 'web', instance: 'nope' };
    const exec = async (body: unknown) => {
      try {
        await client.call('exec', { params, body: body as never });
      } catch (error) {
        assert.ok(error instanceof AgentCallError, String(error));
        return `${error.statusCode} ${error.message}`;
      }
      assert.fail('accepted');
    };
    assert.match(await exec({ command: [1, 2] }), /^400 .*body: command\[0\]: must be a string \(got 1\)$/);
    for (const timeoutMs of [-1, 0, '5', 1e12, 1.5])
      assert.match(
        await exec({ command: ['true'], timeoutMs }),
        /^400 .*body: timeoutMs: must be a whole number/,
      );
    assert.match(await exec({ command: ['a\0b'] }), /^400 .*command\[0\]: must not contain a NUL byte/);
    assert.match(await exec({ command: 'true' }), /^400 .*command: must be an array of strings/);
    assert.match(
      await exec(JSON.parse('{"command": ["true"], "__proto__": {"x": 1}}')),
      /^400 .*body: unknown option "__proto__"$/,
    );
    assert.match(
      await exec({ command: ['true'], timeoutMs: 5000 }),
      /^404 .*no instance/,
      'valid: reaches the fleet',
    );
    assert.match(await exec({ command: ['true'], extra: 1 }), /^400 .*body: unknown option "extra"/);
    const audit = await client.call('audit', { params: { tenant: 'acme' }, query: { tail: 1 } });
    assert.equal(audit.length, 1, 'query numbers still arrive as numbers');
    await assert.rejects(
      client.call('audit', { params: { tenant: 'acme' }, query: { tail: '1x' as never } }),
      /400: querystring: tail: must be a whole number from 0 to 100000 \(got "1x"\)$/,
    );
  });

  test('a slow client is cut off; others are served meanwhile', async () => {
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: server.port,
      ...readClient(certs),
      servername: 'localhost',
    });
    await new Promise((resolve) => socket.once('secureConnect', resolve));
    const started = Date.now();
    socket.write(
      'POST /v1/reconcile HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"pr',
    );
    // Not idle: a byte every 200 ms, so only the whole-request deadline (1500 ms here) can cut it.
    const drip = setInterval(() => socket.writable && socket.write(' '), 200);
    const closed = new Promise<string>((resolve) => {
      let reply = '';
      socket.on('data', (chunk) => (reply += chunk));
      socket.on('close', () => resolve(reply));
    });
    using client = await connectAgent({ url: server.url, ...clientFiles(certs) });
    assert.equal(typeof (await client.nodeStats()).hostMemoryMiB, 'number');
    const reply = await Promise.race([
      closed,
      new Promise<string>((resolve) => setTimeout(() => resolve('still open after 15 s'), 15_000)),
    ]).finally(() => {
      clearInterval(drip);
      socket.destroy();
    });
    const cutAfter = Date.now() - started;
    assert.match(reply, /^HTTP\/1.1 408|^$/, `the server closed the slow request (${reply.slice(0, 40)})`);
    assert.ok(cutAfter >= 1400 && cutAfter < 4000, `cut after ${cutAfter} ms, for a 1500 ms request timeout`);
  });

  test('rotation while a client is connected: no failed request, new connections get the new certificate', async () => {
    using client = await connectAgent({ url: server.url, ...readClient(certs) });
    const before = await serverSerial(server);
    let calls = 0;
    let stop = false;
    const traffic = (async () => {
      while (!stop) {
        await client.nodeStats();
        calls++;
      }
    })();
    const reloaded = logged(/certificates reloaded/);
    await rotateCerts(certs);
    await reloaded;
    const afterSerial = await serverSerial(server);
    stop = true;
    await traffic;
    assert.notEqual(afterSerial, before);
    assert.equal(afterSerial, sameSerial(certStatus(certs)[1]?.serial ?? ''));
    assert.ok(calls > 0);
    await client.nodeStats(); // the old client certificate: same CA, still accepted
    using fresh = await connectAgent({ url: server.url, ...clientFiles(certs) });
    await fresh.nodeStats();
  });

  test('reconciles run one at a time: two asked at once end a sampling period apart', async () => {
    writeDoc(1000); // the sleep policy samples for 1 s: each reconcile takes at least that long
    try {
      using client = await connectAgent({ url: server.url, ...clientFiles(certs) });
      const [first, second] = await Promise.all([client.reconcile(), client.reconcile()]);
      assert.equal(first.failed + second.failed, 0);
      const gapMs = Math.abs(Date.parse(second.at) - Date.parse(first.at));
      assert.ok(gapMs >= 900, `the two reconciles ended ${gapMs} ms apart`);
    } finally {
      writeDoc();
    }
  });

  test('graceful shutdown: the request in flight finishes, new connections are refused', async () => {
    writeDoc(1500); // the sleep policy samples for 1.5 s: a reconcile that takes that long
    using client = await connectAgent({ url: server.url, ...clientFiles(certs) });
    const inFlight = client.reconcile();
    await logged(/reconcile|POST/i, 5000).catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const closing = server.close();
    const report = await inFlight;
    assert.equal(report.failed, 0);
    assert.ok(report.phases.some((p) => p.phase === 'policy' && !p.skipped));
    await closing;
    await assert.rejects(connectAgent({ url: server.url, ...clientFiles(certs) }), /ECONNREFUSED/);
  });
});

describe('agent client input', () => {
  test('a URL that is not https://, or no URL at all, is a ConfigError (exit 2); so is an unreadable key file', async () => {
    const files = {
      ca: '-----BEGIN CERTIFICATE-----',
      cert: '-----BEGIN CERTIFICATE-----',
      key: '-----BEGIN',
    };
    await assert.rejects(connectAgent({ url: 'http://127.0.0.1:1', ...files }), ConfigError);
    await assert.rejects(connectAgent({ url: 'not a url', ...files }), /agent url "not a url": not a URL/);
    await assert.rejects(
      connectAgent({ url: 'https://127.0.0.1:1', ...files, key: '/nonexistent/client.key' }),
      (error: Error) => error instanceof ConfigError && /client key \/nonexistent/.test(error.message),
    );
  });
});

describe('agent server input', () => {
  test('a request timeout of 0 (no limit, to Node), a tiny body limit, a bad port are ConfigErrors', async () => {
    for (const bad of [
      { requestTimeoutMs: 0 },
      { bodyLimit: 0 },
      { port: 70_000 },
      { reconcileIntervalMs: -1 },
    ])
      await assert.rejects(startAgent({ certsDir: '/nonexistent', ...bad }), ConfigError);
  });
});

describe('certificate input', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-certs-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const [what, options] of [
    ['a newline injecting an extension', { hosts: ['ok.test\nbasicConstraints=critical,CA:TRUE'] }],
    ['shell characters', { hosts: ['a b;rm -rf /'] }],
    ['a comma', { hosts: ['a,DNS:evil.test'] }],
    ['a slash in the subject', { hosts: ['a/CN=evil'] }],
    ['no host at all', { hosts: [] }],
    ['0 days', { days: 0 }],
    ['a client name with a newline', { clientName: 'op\nx' }],
  ] as Array<[string, CertOptions]>) {
    test(`refused before anything is made: ${what}`, async () => {
      const certs = join(dir, what.replace(/\W+/g, '-'));
      await assert.rejects(initCerts(certs, { ca: true, ...options }), ConfigError);
      assert.ok(!existsSync(certs), 'no half-made folder is left');
    });
  }

  test('openssl failing part-way leaves no half-made folder', async () => {
    const certs = join(dir, 'failing');
    const saved = process.env.OPENSSL_CONF;
    process.env.OPENSSL_CONF = '/nonexistent/openssl.cnf'; // every openssl run fails
    try {
      await assert.rejects(initCerts(certs, { ca: true }));
    } finally {
      if (saved === undefined) delete process.env.OPENSSL_CONF;
      else process.env.OPENSSL_CONF = saved;
    }
    assert.ok(!existsSync(certs), 'the folder this call made is gone');
  });

  test('names and addresses go into the server certificate as DNS and IP entries', async () => {
    const certs = join(dir, 'good');
    await initCerts(certs, { ca: true, hosts: ['agent.example.test', '10.1.2.3', '::1'], days: 2 });
    const cert = new X509Certificate(readFileSync(certPath(certs, 'server')));
    assert.equal(
      cert.subjectAltName,
      'DNS:agent.example.test, IP Address:10.1.2.3, IP Address:0:0:0:0:0:0:0:1',
    );
  });
});
