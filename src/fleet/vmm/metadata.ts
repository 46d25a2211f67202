import { renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeFreshFile } from '../../util/files.js';
import type { Instance, Pool, Tenant } from '../state/model.js';

/**
 * What the metadata endpoint serves, written into the instance's folder at every start and
 * wake (mode 0600, owned by the VMM's uid) and removed when the VMM ends, so that the endpoint
 * needs neither the fleet database nor the audit log: it reads this document alone, and
 * records each read in the folder's spool (`metadata-reads.jsonl`), which the fleet folds into
 * the tenant's audit log (audit.ts). A secret changed meanwhile shows at the next start or wake,
 * as on the secrets disk.
 */
export const metadataDocumentPath = (dir: string) => join(dir, 'metadata.json');
export const METADATA_SPOOL = 'metadata-reads.jsonl';

export interface MetadataDocument {
  tenant: string;
  path: string;
  identity: Record<string, unknown>;
  pool: Record<string, unknown>;
  secrets: Record<string, string>;
}

export function writeMetadataDocument(
  dir: string,
  instance: Instance,
  pool: Pool,
  tenant: Tenant,
  uid?: number,
) {
  const document: MetadataDocument = {
    tenant: tenant.id,
    path: instance.path,
    identity: {
      id: instance.id,
      path: instance.path,
      tenant: tenant.id,
      pool: pool.id,
      address: instance.address,
      mac: instance.mac,
    },
    pool: {
      id: pool.id,
      image: pool.image,
      revision: instance.revision,
      vcpus: pool.vcpus,
      memoryMiB: pool.memoryMiB,
    },
    secrets: tenant.secrets,
  };
  const partial = `${metadataDocumentPath(dir)}.part`;
  // The folder is the VMM's: a link it left at the partial name is replaced, never written through.
  writeFreshFile(partial, JSON.stringify(document), 0o600, uid);
  renameSync(partial, metadataDocumentPath(dir));
}

export function removeMetadataDocument(dir: string): void {
  rmSync(metadataDocumentPath(dir), { force: true });
}
