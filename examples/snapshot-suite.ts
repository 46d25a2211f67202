// Boot once, set up once, snapshot; then every test starts from a fresh clone of that state.
// The setup snapshot is cached: a second run skips the boot and the setup entirely.
// Run it with: vmkit run examples/snapshot-suite.ts
import { defineTest } from 'vmkit';

export default defineTest({
  name: 'clean clones',
  machines: {
    box: {
      disks: [{ sizeMiB: 32 }],
      async setup(box) {
        await box.succeed('mke2fs -q /dev/vda && mkdir -p /data && mount /dev/vda /data');
        await box.succeed('echo "made during setup" > /data/README');
        await box.succeed('httpd -p 8080 -h /data'); // a service that is running in every clone
      },
    },
  },
  tests: {
    'a test scribbles over the disk': async ({ box }) => {
      await box.succeed('echo scribble > /data/scratch && rm /data/README');
    },
    'the next test starts clean': async ({ box }) => {
      await box.fail('test -e /data/scratch');
      await box.succeed('grep -q "made during setup" /data/README');
    },
    'the service from setup is already running': async ({ box }) => {
      await box.waitForOpenPort(8080, { timeoutMs: 10_000 });
      const page = await box.succeed('wget -q -O - http://127.0.0.1:8080/README');
      if (page.trim() !== 'made during setup') throw new Error(`unexpected page: ${page}`);
    },
  },
});
