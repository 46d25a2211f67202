import type { LedgerEvent } from './ledger.js';

const escapeXml = (text: string) =>
  text
    // biome-ignore lint/suspicious/noControlCharactersInRegex: characters XML 1.0 cannot carry
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f]/g, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');

interface Case {
  name: string;
  durationMs: number;
  failure?: { message: string; body: string };
}

/**
 * JUnit XML for CI systems, from the ledger: one testcase per test of a suite, or per subtest of
 * a single test (plus one for the test itself when it failed outside any subtest). A failure
 * carries its message and the console tails of the test's machines.
 */
export function junitXml(suiteName: string, events: LedgerEvent[]): string {
  const units = events.filter((event) => event.kind === 'test' && event.durationMs !== undefined);
  const subtests = events.filter((event) => event.kind === 'subtest' && event.durationMs !== undefined);
  const failures = events.filter((event) => event.kind === 'failure');
  const interrupted = events.some((event) => event.kind === 'run' && event.outcome === 'interrupted');
  const tailsFor = (test: string | undefined) => {
    const failure = failures.find((event) => event.test === test) ?? failures[0];
    return Object.entries(failure?.detail ?? {})
      .map(([machine, tail]) => `--- console of ${machine} ---\n${tail}`)
      .join('\n');
  };
  const cases: Case[] = [];
  const asCase = (event: LedgerEvent, name: string): Case => ({
    name,
    durationMs: event.durationMs ?? 0,
    ...(event.outcome === 'ok'
      ? {}
      : {
          failure: {
            message: event.error?.split('\n')[0] ?? event.outcome ?? 'failed',
            body: `${event.error ?? ''}\n${tailsFor(event.test)}`,
          },
        }),
  });
  for (const unit of units) cases.push(asCase(unit, unit.name));
  // A shard that got no tests ran none: it has no case of its own to report, unless it failed.
  const run = events.filter((event) => event.kind === 'run' && event.outcome !== undefined).at(-1);
  const emptyShard = events.some((event) => event.kind === 'shard') && run?.outcome === 'ok';
  if (units.length === 0 && !emptyShard) {
    for (const subtest of subtests) cases.push(asCase(subtest, subtest.name));
    const failedOutside = run && run.outcome !== 'ok' && !subtests.some((event) => event.outcome !== 'ok');
    const whole =
      run ?? ({ kind: 'run', name: suiteName, time: '', at: 0, outcome: 'interrupted' } as LedgerEvent);
    if (failedOutside || cases.length === 0) cases.push(asCase(whole, suiteName));
  }
  const failed = cases.filter((unit) => unit.failure).length;
  const seconds = (ms: number) => (ms / 1000).toFixed(3);
  const total = cases.reduce((sum, unit) => sum + unit.durationMs, 0);
  const body = cases
    .map((unit) => {
      const open = `    <testcase classname="${escapeXml(suiteName)}" name="${escapeXml(unit.name)}" time="${seconds(unit.durationMs)}"`;
      if (!unit.failure) return `${open}/>`;
      return `${open}>\n      <failure message="${escapeXml(unit.failure.message)}">${escapeXml(unit.failure.body)}</failure>\n    </testcase>`;
    })
    .join('\n');
  return `<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="vmkit" tests="${cases.length}" failures="${failed}" time="${seconds(total)}">
  <testsuite name="${escapeXml(suiteName)}" tests="${cases.length}" failures="${failed}" errors="0" time="${seconds(total)}"${interrupted ? ' interrupted="true"' : ''}>
${body}
  </testsuite>
</testsuites>
`;
}
