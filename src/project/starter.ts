/** What `vmkit init` writes: a commented TypeScript config (JSON has no comments), or plain JSON. */
export const STARTER_TS = `// vmkit project VMs: \`vmkit up\`, \`vmkit test\`, \`vmkit exec -- cmd\`, \`vmkit reset\`.
// Loaded by vmkit with tsx; the default export is the config. See the README, "Project VMs".
export default {
  vms: {
    dev: {
      // "tiny" (busybox, boots in seconds), "debian", or a recipe file like "vm/recipe.json";
      // or media: { disk: 'vm/base.qcow2' } (never written), or
      // { iso: 'vm/installer.iso', install: 'vm/install.json', diskMiB: 8192 } (console steps).
      image: 'tiny',
      memoryMiB: 256,
      cpus: 1,
      // The persistent data disk, mounted at /work in the guest; kept across down/up.
      diskMiB: 1024,
      // Forwarded ports: guest port to a host port on 127.0.0.1 (picked when host is left out).
      ports: [],
      // sshPort: 22, // the guest's sshd, forwarded for \`vmkit ssh\` and rsync (images with an sshd)
      // syncMethod: 'vmkit', // or 'rsync' (over SSH), or 'auto' (rsync where the image has it)
      // Host folders copied in by \`vmkit sync\` (default: the project, minus .git and .gitignore).
      sync: [{ host: '.', guest: '/work/project', exclude: ['node_modules'] }],
      // Named commands for \`vmkit run-cmd <name>\`; \`vmkit test\` runs "test", \`vmkit quick\` the default.
      commands: {
        test: 'sh ./test.sh',
      },
      defaultCommand: 'test',
      // Run once after the first boot, and again whenever this list changes; vmkit then saves
      // the "clean" snapshot that \`vmkit reset\` returns to.
      provision: [],
    },
  },
};
`;

export const STARTER_JSON = `${JSON.stringify(
  {
    vms: {
      dev: {
        image: 'tiny',
        memoryMiB: 256,
        diskMiB: 1024,
        sync: [{ host: '.', guest: '/work/project', exclude: ['node_modules'] }],
        commands: { test: 'sh ./test.sh' },
        defaultCommand: 'test',
        provision: [],
      },
    },
  },
  null,
  2,
)}\n`;
