import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ConfigError } from '../errors.js';
import { ensureDir } from '../util/files.js';
import { htmlReport, type ReportImage } from './html-report.js';
import { junitXml } from './junit.js';
import { type MergedRun, mergeShardRuns, readShardRun } from './merge.js';
import { findScreenshots } from './recorder.js';
import { writeTimings } from './shard.js';

/** What `vmkit report merge` wrote. */
export interface MergeResult extends MergedRun {
  files: string[];
}

/**
 * Reads the shards' output folders (or events.jsonl files), merges them, and writes one run's
 * events.jsonl, junit.xml, report.html and timings.json into `outDir`. The JUnit XML and the HTML
 * report are made from the merged events, as `vmkit run` makes them from its own.
 */
export async function mergeReports(sources: string[], outDir: string): Promise<MergeResult> {
  const runs = await Promise.all(sources.map(readShardRun));
  const merged = mergeShardRuns(runs);
  const out = resolve(outDir);
  await ensureDir(out).catch((error: Error) => {
    throw new ConfigError(`--out ${outDir}: cannot create the folder: ${error.message}`);
  });
  const images: ReportImage[] = [];
  for (const run of runs) {
    const label = run.events.find((event) => event.kind === 'shard')?.name.replace('/', '-of-');
    for (const image of await findScreenshots(run.dir))
      images.push({ ...image, name: label ? `shard-${label}/${image.name}` : image.name });
  }
  const files = ['events.jsonl', 'junit.xml', 'report.html', 'timings.json'].map((name) => join(out, name));
  const [events, junit, html, timings] = files as [string, string, string, string];
  await writeFile(events, merged.events.map((event) => `${JSON.stringify(event)}\n`).join(''));
  await writeFile(junit, junitXml(merged.suite, merged.events));
  await writeFile(html, htmlReport(merged.suite, merged.events, images));
  await writeTimings(timings, merged.suite, merged.timings);
  return { ...merged, files };
}
