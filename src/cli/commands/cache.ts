import { type Command, Option } from 'commander';

const out = (line: string) => process.stdout.write(`${line}\n`);
const megabytes = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

/**
 * `vmkit cache ...`: the cache folder's images and snapshots. One command, one subcommand per
 * operation (export, import; more to come), each loading its module when it runs.
 */
/** Export and import work on the cache folder: a snapshot store moved out of it is not theirs. */
async function requireStoreInCache(): Promise<void> {
  if (process.env.VMKIT_SNAPSHOT_DIR) {
    const { ConfigError } = await import('../../errors.js');
    throw new ConfigError(
      `cache export and import work on the cache folder, but VMKIT_SNAPSHOT_DIR (${process.env.VMKIT_SNAPSHOT_DIR}) moves the snapshot store out of it: unset it`,
    );
  }
}

export function registerCacheCommands(program: Command): Command {
  const cache = program
    .command('cache')
    .description(
      'the cache of images, snapshots and booted states ($VMKIT_CACHE_DIR, else $XDG_CACHE_HOME/vmkit, else ~/.cache/vmkit): export, import, and the boot cache (ls, prune, clear)',
    );
  cache
    .command('export')
    .description(
      'write the cached images and snapshots into one tar file (gzipped when FILE ends in .gz or .tgz), ' +
        'for vmkit cache import on another machine (a CI cache, say)',
    )
    .argument('<file>', 'the archive to write (replaced whole when it exists)')
    .addOption(new Option('--only <part>', 'only images or only snapshots').choices(['images', 'snapshots']))
    .action(async (file: string, options: { only?: 'images' | 'snapshots' }) => {
      await requireStoreInCache();
      const [{ exportCache }, { cacheDir }] = await Promise.all([
        import('../../cache/export.js'),
        import('../../util/paths.js'),
      ]);
      const result = await exportCache(file, { cacheDir: cacheDir(), only: options.only });
      out(
        `exported ${result.images.length} image(s) and ${result.snapshots.length} snapshot(s) from ${cacheDir()} into ${result.file} (${megabytes(result.bytes)})`,
      );
    });
  cache
    .command('import')
    .description(
      'add the images and snapshots of an archive of vmkit cache export to this cache, each verified against its ' +
        'digests; a snapshot this host cannot restore (another QEMU version or accelerator, a damaged file) is ' +
        'refused with the reason and the rest imported (exit 0: refusals are reported, not errors)',
    )
    .argument('<file>', 'an archive written by vmkit cache export')
    .option('--json', 'print what happened to each entry as JSON')
    .action(async (file: string, options: { json?: boolean }) => {
      await requireStoreInCache();
      const [{ importCache }, { cacheDir }, { Runtime }] = await Promise.all([
        import('../../cache/import.js'),
        import('../../util/paths.js'),
        import('../../runtime/runtime.js'),
      ]);
      await using runtime = new Runtime();
      const outcomes = await importCache(file, { cacheDir: cacheDir(), runtime });
      if (options.json) {
        out(JSON.stringify(outcomes, null, 2));
        return;
      }
      for (const entry of outcomes)
        out(
          `${entry.result}\t${entry.kind} ${entry.id} (${entry.name})${entry.reason ? `: ${entry.reason}` : ''}`,
        );
      const count = (result: string) => outcomes.filter((entry) => entry.result === result).length;
      out(
        `${count('imported')} imported, ${count('present')} already present, ${count('refused')} refused, into ${cacheDir()}`,
      );
    });
  return cache;
}
