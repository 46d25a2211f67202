import type { LedgerEvent } from './ledger.js';

const escapeHtml = (text: string) =>
  text
    // biome-ignore lint/suspicious/noControlCharactersInRegex: terminal control bytes are not text
    .replace(/\x1b\[[0-?]*[ -/]*[@-~]|[\u0000-\u0008\u000b-\u001f]/g, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');

const seconds = (ms: number | undefined) =>
  `${((ms ?? 0) / 1000).toFixed(ms !== undefined && ms < 10_000 ? 2 : 1)} s`;

const STYLE = `
figure{display:inline-block;margin:6px}figure img{max-width:640px;border:1px solid #ccc}figcaption{font-size:12px;color:#555}
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#f6f7f9}
header{padding:14px 20px;color:#fff}header h1{margin:0;font-size:20px}header p{margin:4px 0 0}
.passed{background:#1f7a3a}.failed{background:#b3261e}.interrupted{background:#8a5a00}
main{padding:12px 20px}section{background:#fff;border:1px solid #dde;border-radius:6px;margin:12px 0;padding:10px 14px}
h2{font-size:16px;margin:4px 0 10px}pre{background:#f1f2f4;padding:8px;overflow:auto;max-height:420px;margin:4px 0;white-space:pre-wrap;word-break:break-all}
.failure{border:2px solid #b3261e;background:#fff5f4}.failure h2{color:#b3261e}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 8px;border-bottom:1px solid #eee}
.ok{color:#1f7a3a}.bad{color:#b3261e;font-weight:600}.warn{color:#8a5a00}
.lane{position:relative;height:22px;margin:2px 0 2px 110px;background:#f1f2f4;border-radius:3px}
.lane span.label{position:absolute;left:-110px;width:104px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-size:12px;top:3px}
.bar{position:absolute;top:3px;height:16px;min-width:2px;border-radius:2px;opacity:.85}
.k-boot,.k-restore{background:#3b6fd8}.k-setup{background:#7b4fd0}.k-snapshot{background:#0e8a8a}.k-command{background:#6c7a89}.k-console-step{background:#8a6d3b}.k-test,.k-subtest{background:#c9a227}.bar.f{background:#b3261e}
details{margin:3px 0}summary{cursor:pointer}details.test>summary{font-weight:600}
.step{margin-left:14px}.log{font-size:12px;color:#555;margin-left:14px;white-space:pre-wrap}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px;border-radius:2px}
`;

/**
 * The run's HTML report: one self-contained file (inline CSS, no scripts, nothing fetched) built
 * from the ledger: status, the failure with its evidence, tests, a timeline per machine, each
 * command's output folded, console logs. Passed tests are folded, so 100 tests stay readable.
 */
/** A PNG the run left in its output folder (a screenshot), shown inline. */
export interface ReportImage {
  name: string;
  png: Buffer;
}

export function htmlReport(title: string, events: LedgerEvent[], images: ReportImage[] = []): string {
  const run = events.filter((event) => event.kind === 'run' && event.outcome).at(-1);
  const status = !run
    ? 'interrupted'
    : run.outcome === 'ok'
      ? 'passed'
      : run.outcome === 'interrupted'
        ? 'interrupted'
        : 'failed';
  const total = Math.max(1, ...events.map((event) => event.at + (event.durationMs ?? 0)));
  const tests = events.filter((event) => event.kind === 'test' && event.durationMs !== undefined);
  const failures = events.filter((event) => event.kind === 'failure');
  const failedTests = tests.filter((event) => event.outcome !== 'ok');
  const parts: string[] = [];
  parts.push(
    `<header class="${status}"><h1>${escapeHtml(title)}: ${status.toUpperCase()}</h1><p>${seconds(run?.durationMs ?? total)}` +
      (tests.length ? ` · ${tests.length} tests, ${failedTests.length} failed` : '') +
      ` · started ${escapeHtml(events[0]?.time ?? '')}${status === 'interrupted' ? ' · the run was interrupted before it finished' : ''}</p></header><main>`,
  );
  for (const failure of failures) {
    parts.push(
      `<section class="failure"><h2>Failure${failure.test ? ` in ${escapeHtml(failure.test)}` : ''}: ${escapeHtml(failure.name)}</h2><pre>${escapeHtml(failure.error ?? '')}</pre>` +
        Object.entries(failure.detail ?? {})
          .map(
            ([machine, tail]) =>
              `<p><b>console of ${escapeHtml(machine)}</b> (tail)</p><pre>${escapeHtml(tail)}</pre>`,
          )
          .join('') +
        `</section>`,
    );
  }
  if (images.length) {
    parts.push(
      `<section><h2>Screenshots</h2>${images
        .map(
          (image) =>
            `<figure><img alt="${escapeHtml(image.name)}" src="data:image/png;base64,${image.png.toString('base64')}"><figcaption>${escapeHtml(image.name)}</figcaption></figure>`,
        )
        .join('')}</section>`,
    );
  }
  if (tests.length) {
    parts.push(
      `<section><h2>Tests</h2><table><tr><th>test</th><th>result</th><th>time</th></tr>${tests
        .map(
          (test) =>
            `<tr><td><a href="#t-${anchor(test.name)}">${escapeHtml(test.name)}</a></td><td class="${test.outcome === 'ok' ? 'ok' : 'bad'}">${test.outcome === 'ok' ? 'passed' : 'FAILED'}</td><td>${seconds(test.durationMs)}</td></tr>`,
        )
        .join('')}</table></section>`,
    );
  }
  parts.push(timeline(events, total));
  parts.push(steps(events, tests));
  const consoles = events.filter((event) => event.kind === 'console');
  if (consoles.length) {
    parts.push(
      `<section><h2>Console logs</h2>${consoles
        .map(
          (event) =>
            `<details><summary>${escapeHtml(event.machine ?? '')}${event.test ? ` (${escapeHtml(event.test)})` : ''}</summary><pre>${escapeHtml(event.detail?.log ?? '')}</pre></details>`,
        )
        .join('')}</section>`,
    );
  }
  const bundles = events.filter((event) => event.kind === 'diagnostics');
  if (bundles.length) {
    parts.push(
      `<section><h2>Diagnostics</h2>${bundles
        .map(
          (event) =>
            `<p>${escapeHtml(event.machine ?? '')}: <code>${escapeHtml(event.detail?.dir ?? '')}</code> (${escapeHtml(event.detail?.files ?? '')})</p>`,
        )
        .join('')}</section>`,
    );
  }
  parts.push('</main>');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>vmkit: ${escapeHtml(title)} ${status}</title><style>${STYLE}</style></head><body>${parts.join('\n')}</body></html>\n`;
}

const anchor = (name: string) => name.replace(/[^A-Za-z0-9_-]/g, '_');

const TIMED = new Set(['boot', 'restore', 'setup', 'snapshot', 'command', 'console-step']);

function timeline(events: LedgerEvent[], total: number): string {
  const lanes = new Map<string, LedgerEvent[]>();
  for (const event of events) {
    if (event.durationMs === undefined) continue;
    const lane = TIMED.has(event.kind)
      ? (event.machine ?? 'vmkit')
      : event.kind === 'test' || event.kind === 'subtest'
        ? 'tests'
        : undefined;
    if (!lane) continue;
    lanes.set(lane, [...(lanes.get(lane) ?? []), event]);
  }
  const rows = [...lanes]
    .map(
      ([lane, laneEvents]) =>
        `<div class="lane"><span class="label">${escapeHtml(lane)}</span>${laneEvents
          .map((event) => {
            const left = (100 * event.at) / total;
            const width = (100 * (event.durationMs ?? 0)) / total;
            const failed = event.outcome && event.outcome !== 'ok' ? ' f' : '';
            const label = `${event.kind} ${event.name.slice(0, 120)}: ${seconds(event.durationMs)}${event.outcome && event.outcome !== 'ok' ? ` (${event.outcome})` : ''}`;
            return `<div class="bar k-${event.kind}${failed}" style="left:${left.toFixed(3)}%;width:${width.toFixed(3)}%" title="${escapeHtml(label)}"></div>`;
          })
          .join('')}</div>`,
    )
    .join('');
  const legend = ['boot', 'restore', 'setup', 'snapshot', 'command', 'console-step', 'test']
    .map((kind) => `<span class="k-${kind}"></span>${kind}`)
    .join('');
  return `<section><h2>Timeline (${seconds(total)}; hover a bar for the step)</h2><div class="legend"><span class="bar f" style="position:static"></span>failed${legend}</div>${rows}</section>`;
}

const STEP_KINDS = new Set([
  'command',
  'console-step',
  'log',
  'subtest',
  'setup',
  'boot',
  'restore',
  'snapshot',
]);

function steps(events: LedgerEvent[], tests: LedgerEvent[]): string {
  const groups = new Map<string, LedgerEvent[]>();
  for (const event of events) {
    if (!STEP_KINDS.has(event.kind)) continue;
    const key = event.test ?? '(run)';
    groups.set(key, [...(groups.get(key) ?? []), event]);
  }
  const outcomeOf = (key: string) => tests.find((test) => test.name === key)?.outcome;
  return `<section><h2>Steps</h2>${[...groups]
    .map(([key, group]) => {
      const outcome = outcomeOf(key);
      const failed =
        outcome !== undefined
          ? outcome !== 'ok'
          : group.some((event) => event.outcome && event.outcome !== 'ok');
      return `<details class="test" id="t-${anchor(key)}"${failed ? ' open' : ''}><summary class="${failed ? 'bad' : 'ok'}">${escapeHtml(key)} (${group.length} steps)</summary>${group.map(step).join('')}</details>`;
    })
    .join('')}</section>`;
}

function step(event: LedgerEvent): string {
  const who = event.machine ? `[${escapeHtml(event.machine)}] ` : '';
  if (event.kind === 'log')
    return `<div class="log">${seconds(event.at)} ${who}${escapeHtml(event.name)}</div>`;
  const failed = event.outcome && event.outcome !== 'ok';
  const result =
    event.kind === 'command' || event.kind === 'console-step'
      ? event.exitCode !== undefined
        ? `exit ${event.exitCode}`
        : (event.outcome ?? '')
      : (event.outcome ?? '');
  const summary = `${seconds(event.at)} ${who}${event.kind === 'command' ? '$ ' : `${event.kind}: `}${escapeHtml(event.name.slice(0, 300))} <span class="${failed ? 'bad' : event.exitCode ? 'warn' : 'ok'}">${escapeHtml(result)}</span> ${seconds(event.durationMs)}`;
  const body =
    (event.stdout ? `<pre>${escapeHtml(event.stdout)}</pre>` : '') +
    (event.stderr ? `<pre class="warn">${escapeHtml(event.stderr)}</pre>` : '') +
    (event.error ? `<pre class="bad">${escapeHtml(event.error)}</pre>` : '');
  return body
    ? `<details class="step"${failed ? ' open' : ''}><summary>${summary}</summary>${body}</details>`
    : `<div class="step">${summary}</div>`;
}
