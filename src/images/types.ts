/** What a built image folder holds, as written to its manifest.json. */
export interface ImageManifest {
  name: string;
  key: string;
  /** File names inside the image folder. */
  kernel: string;
  initrd: string;
  /** The root disk, a qcow2 base that every machine gets an overlay on (Debian images). */
  disk?: string;
  diskSizeMiB?: number;
  cmdline: string;
  kernelRelease: string;
  packages: string[];
  /** The guest profile that drives it (see src/guest/profiles); older manifests: the image name. */
  profile?: string;
  modules: string[];
  builtAt: string;
  /** Where it was built: on the host (mmdebstrap, root) or in a builder VM; absent in older manifests. */
  builder?: ImageBuilder;
  /** How long the build took. */
  buildMs?: number;
}

export type ImageBuilder = 'host' | 'vm';

/** A bootable image, ready for startMachine. */
export interface BootImage {
  name: string;
  key: string;
  dir: string;
  kernel: string;
  initrd: string;
  /** The root disk's qcow2 base, attached first (/dev/vda) through a copy-on-write overlay. */
  disk?: string;
  diskSizeMiB?: number;
  cmdline: string;
  kernelRelease: string;
  /** The guest profile that knows how to set this guest up after boot or restore. */
  profile: string;
  /** When, where and how fast its build ran (from the manifest; older images lack the last two). */
  builtAt?: string;
  builder?: ImageBuilder;
  buildMs?: number;
}
