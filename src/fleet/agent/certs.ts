import { randomBytes, X509Certificate } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../../errors.js';
import { runTool } from '../../util/exec.js';
import { ensurePrivateDir } from '../../util/private.js';
import { parseInput, wholeNumber } from '../../util/validate.js';

/**
 * The agent's certificates, made with the openssl CLI (installed with vmkit's host tools and
 * the reference for X.509; Node can read certificates but not issue them). One folder holds a CA,
 * the agent's server certificate and an operator's client certificate; keys are ECDSA P-256,
 * written with mode 0600 and moved into place whole.
 */

export type CertRole = 'ca' | 'server' | 'client';
export const CERT_ROLES: readonly CertRole[] = ['ca', 'server', 'client'];

export const defaultCertsDir = (fleetDir: string) => join(fleetDir, 'agent', 'certs');
export const certPath = (dir: string, role: CertRole) => join(dir, `${role}.pem`);
export const keyPath = (dir: string, role: CertRole) => join(dir, `${role}.key`);

export interface CertOptions {
  /** Validity of the certificates issued (negative: already expired, for tests). */
  days?: number;
  /** Names and addresses the server certificate is valid for (default localhost, 127.0.0.1, ::1, this host). */
  hosts?: string[];
  /** The client certificate's common name (default "operator"). */
  clientName?: string;
}

/** A DNS name: dot-separated labels of letters, digits and inner dashes, 253 characters at most. */
const DNS_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const validHost = (host: string) => DNS_NAME.test(host) || (isIP(host) !== 0 && !host.includes('%'));

/** What goes into openssl's extension file and subject: checked, so nothing can be injected. */
const certOptions = (minDays: number) =>
  z
    .object({
      days: wholeNumber(minDays, 36_500).optional(),
      hosts: z
        .array(
          z.string({ error: 'must be a string' }).refine(validHost, {
            error: 'must be a DNS name (letters, digits, dots, dashes) or an IP address',
          }),
        )
        .min(1, { error: 'must name at least one host' })
        .optional(),
      clientName: z
        .string()
        .regex(/^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$/, {
          error: "must be 1 to 64 letters, digits, spaces, '.', '_', '@' or '-'",
        })
        .optional(),
    })
    .strict();
/** Certificates valid for at least a day; issueCert alone also takes negative days (expired, for tests). */
const checked = (options: CertOptions, minDays = 1): CertOptions => {
  const parsed = parseInput(certOptions(minDays), options, 'certificates');
  if (parsed.days === 0) throw new ConfigError('certificates: days: must not be 0');
  return parsed;
};

const openssl = (args: string[]) => runTool('openssl', args, { timeoutMs: 30_000 });
/** A new ECDSA P-256 key, unencrypted (its file is 0600). */
const NEW_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

/** A scratch folder inside `dir` (same file system, so its files rename into place). */
function scratch(dir: string): { path: string; done: () => void } {
  ensurePrivateDir(dir); // 0700 whatever the umask, and narrowed if an older run left it open
  const path = mkdtempSync(join(dir, '.new-'));
  return { path, done: () => rmSync(path, { recursive: true, force: true }) };
}

function install(from: string, dir: string, role: CertRole): void {
  chmodSync(join(from, `${role}.key`), 0o600);
  renameSync(join(from, `${role}.key`), keyPath(dir, role));
  renameSync(join(from, `${role}.pem`), certPath(dir, role));
}

const san = (hosts: string[]) => hosts.map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`)).join(',');

async function makeCa(dir: string, days: number): Promise<void> {
  const tmp = scratch(dir);
  try {
    await openssl([
      'req',
      '-x509',
      ...NEW_KEY,
      '-keyout',
      join(tmp.path, 'ca.key'),
      '-out',
      join(tmp.path, 'ca.pem'),
      '-subj',
      `/CN=vmkit fleet agent CA ${randomBytes(4).toString('hex')}`,
      '-days',
      String(days),
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    install(tmp.path, dir, 'ca');
  } finally {
    tmp.done();
  }
}

/** Issues the server or client certificate from the folder's CA, with a new key. */
export async function issueCert(
  dir: string,
  role: 'server' | 'client',
  options: CertOptions = {},
): Promise<void> {
  options = checked(options, -36_500);
  requireCa(dir);
  const tmp = scratch(dir);
  try {
    const hosts = options.hosts ?? ['localhost', '127.0.0.1', '::1', hostname()].filter(validHost);
    const subject = role === 'server' ? `/CN=${hosts[0]}` : `/CN=${options.clientName ?? 'operator'}`;
    const ext = join(tmp.path, 'ext.cnf');
    writeFileSync(
      ext,
      role === 'server'
        ? `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=${san(hosts)}\n`
        : 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n',
    );
    const key = join(tmp.path, `${role}.key`);
    const csr = join(tmp.path, `${role}.csr`);
    await openssl(['req', '-new', ...NEW_KEY, '-keyout', key, '-out', csr, '-subj', subject]);
    await openssl([
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      certPath(dir, 'ca'),
      '-CAkey',
      keyPath(dir, 'ca'),
      '-set_serial',
      `0x${randomBytes(12).toString('hex')}`,
      '-days',
      String(options.days ?? 90),
      '-extfile',
      ext,
      '-out',
      join(tmp.path, `${role}.pem`),
    ]);
    install(tmp.path, dir, role);
  } finally {
    tmp.done();
  }
}

function requireCa(dir: string): void {
  if (!existsSync(certPath(dir, 'ca')) || !existsSync(keyPath(dir, 'ca'))) {
    throw new ConfigError(
      `no CA in ${dir} (ca.pem and ca.key): run "vmkit fleet agent certs init --ca", or copy your CA there`,
    );
  }
}

/**
 * Makes the server and client certificates; with `ca`, a new CA first (refused when the folder
 * already has one, so that certificates it signed are not orphaned by accident).
 */
export async function initCerts(
  dir: string,
  { ca, ...rest }: CertOptions & { ca?: boolean } = {},
): Promise<CertStatus[]> {
  const options = checked(rest);
  if (ca && existsSync(certPath(dir, 'ca')))
    throw new ConfigError(`${dir} already has a CA (${certPath(dir, 'ca')})`);
  if (!ca) requireCa(dir);
  const hadDir = existsSync(dir);
  const had = new Set(CERT_ROLES.filter((role) => existsSync(certPath(dir, role))));
  try {
    if (ca) await makeCa(dir, Math.max(options.days ?? 0, 3650));
    await issueCert(dir, 'server', options);
    await issueCert(dir, 'client', options);
  } catch (error) {
    // Nothing half-made: what this call added goes (a new CA with what it signed, or the folder).
    for (const role of CERT_ROLES.filter((r) => !had.has(r))) {
      rmSync(certPath(dir, role), { force: true });
      rmSync(keyPath(dir, role), { force: true });
    }
    if (!hadDir) rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return certStatus(dir);
}

/** New keys and certificates for the server and the client from the same CA; a running agent reloads them. */
export async function rotateCerts(dir: string, given: CertOptions = {}): Promise<CertStatus[]> {
  const options = checked(given);
  requireCa(dir);
  for (const role of ['server', 'client'] as const) {
    if (!existsSync(certPath(dir, role)))
      throw new ConfigError(`${dir} has no ${role} certificate: run certs init first`);
  }
  await issueCert(dir, 'server', options);
  await issueCert(dir, 'client', options);
  return certStatus(dir);
}

export interface CertStatus {
  role: CertRole;
  file: string;
  present: boolean;
  subject?: string;
  issuer?: string;
  serial?: string;
  validFrom?: string;
  validTo?: string;
  daysLeft?: number;
  expired?: boolean;
  /** Signed by the folder's CA (the CA itself: self-signed). */
  signedByCa?: boolean;
  keyMode?: string;
}

export function certStatus(dir: string): CertStatus[] {
  const ca = existsSync(certPath(dir, 'ca'))
    ? new X509Certificate(readFileSync(certPath(dir, 'ca')))
    : undefined;
  return CERT_ROLES.map((role) => {
    const file = certPath(dir, role);
    if (!existsSync(file)) return { role, file, present: false };
    const cert = new X509Certificate(readFileSync(file));
    const validTo = new Date(cert.validTo);
    const mode = existsSync(keyPath(dir, role))
      ? (statSync(keyPath(dir, role)).mode & 0o777).toString(8).padStart(4, '0')
      : undefined;
    return {
      role,
      file,
      present: true,
      subject: cert.subject,
      issuer: cert.issuer,
      serial: cert.serialNumber,
      validFrom: new Date(cert.validFrom).toISOString(),
      validTo: validTo.toISOString(),
      daysLeft: Math.floor((validTo.getTime() - Date.now()) / 86_400_000),
      expired: validTo.getTime() < Date.now(),
      signedByCa: ca ? cert.verify(ca.publicKey) : false,
      ...(mode ? { keyMode: mode } : {}),
    };
  });
}
