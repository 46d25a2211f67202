/** What a built image folder holds, as written to its manifest.json. */
export interface ImageManifest {
  name: string;
  key: string;
  /** File names inside the image folder. */
  kernel: string;
  initrd: string;
  cmdline: string;
  kernelRelease: string;
  packages: string[];
  modules: string[];
  builtAt: string;
}

/** A bootable image, ready for startMachine. */
export interface BootImage {
  name: string;
  key: string;
  dir: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  kernelRelease: string;
}
