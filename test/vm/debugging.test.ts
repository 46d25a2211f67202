// Debugging a run: --interactive (a REPL with the machines) and --debug-on-failure with attach
// (a shell and the serial console).
import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import { cli, root, runProgram } from '../helpers.js';

/** Runs the CLI with `input` piped in (no TTY); `during(log)` may act while it runs. */
function runWithInput(
  args: string[],
  input: string | undefined,
  during?: (log: () => string, pid: number) => Promise<void>,
) {
  return runProgram(process.execPath, [cli, ...args], { input, during, timeoutMs: 180_000 });
}

async function until(what: string, check: () => boolean, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A `vmkit attach <run> solo --console` left running, its input open. */
interface Viewer {
  child: ChildProcessWithoutNullStreams;
  output: () => string;
  exited: Promise<number | null>;
}

function attachConsole(run: string): Viewer {
  const child = spawn(process.execPath, [cli, 'attach', run, 'solo', '--console'], { cwd: root });
  let output = '';
  const collect = (chunk: Buffer) => {
    output += chunk.toString();
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  return { child, output: () => output, exited };
}

/** What `promise` gives, or a line saying it gave nothing in `ms`. */
const within = <T>(promise: Promise<T>, ms: number) =>
  Promise.race([
    promise,
    new Promise<string>((resolve) => setTimeout(() => resolve(`nothing in ${ms} ms`), ms)),
  ]);

describe('debugging a run', () => {
  it('--interactive: a REPL with the machines in scope, started and ready; no test body runs', async () => {
    const { code, stdout, stderr } = await runWithInput(
      ['run', '--interactive', 'test/fixtures/pass.ts'],
      "await solo.succeed('hostname')\n(await solo.execute('echo $((6*7))')).stdout\n",
    );
    assert.equal(code, 0, stderr);
    assert.match(stdout, /'solo\\n'/);
    assert.match(stdout, /'42\\n'/);
    assert.doesNotMatch(stderr, /subtest says hello/);
  });

  it('--debug-on-failure without a TTY: keeps the machines, attach reaches them, a signal ends the wait', async () => {
    let attached = '';
    const viewers: Viewer[] = [];
    try {
      const { code, stderr } = await runWithInput(
        ['run', '--debug-on-failure', 'test/fixtures/fail.ts'],
        undefined,
        async (log, pid) => {
          await until('the attach hint', () => /vmkit attach \S+ solo/.test(log()));
          const run = log().match(/vmkit attach (\S+) solo/)?.[1] as string;
          const shell = await runWithInput(
            ['attach', run, 'solo'],
            'hostname\ntest -e /etc/does-not-exist || echo missing\n',
          );
          attached = shell.stdout;
          // The console: what is typed reaches the guest's console shell, its answer comes back.
          const open = attachConsole(run);
          const leaving = attachConsole(run);
          viewers.push(open, leaving);
          open.child.stdin.write('echo console-$((6*7))\n');
          try {
            await until('the console answer', () => /console-42/.test(open.output()), 60_000);
            // Its end of input (Ctrl-D) detaches a viewer while the run still waits.
            leaving.child.stdin.end();
            assert.equal(await within(leaving.exited, 10_000), 0, leaving.output());
          } finally {
            process.kill(pid, 'SIGTERM');
          }
        },
      );
      assert.equal(code, 1, stderr);
      assert.match(stderr, /no terminal: waiting for SIGINT or SIGTERM, or 10 min/);
      assert.match(attached, /^vmkit: root shell on solo.*\nsolo\nmissing\n$/s);
      assert.match(stderr, /a signal arrived: cleaning up/);
      const [open] = viewers as [Viewer];
      assert.match(open.output(), /echo console-\$\(\(6\*7\)\)/, 'the typed line was not echoed');
      assert.match(open.output(), /^console-42\r?$/m);
      // The run's clean-up closes the console: a viewer whose input is still open ends by itself.
      assert.equal(await within(open.exited, 10_000), 0, open.output());
    } finally {
      for (const viewer of viewers) viewer.child.kill('SIGKILL');
    }
  });

  it('--debug-on-failure ends at its time limit and cleans up', async () => {
    const { code, stderr } = await runWithInput(
      ['run', '--debug-on-failure', '--debug-wait', '2000', 'test/fixtures/fail.ts'],
      undefined,
    );
    assert.equal(code, 1, stderr);
    assert.match(stderr, /the time limit passed: cleaning up/);
  });

  it('attach refuses a run that is not waiting: one line, exit 2', async () => {
    const { code, stderr } = await runWithInput(['attach', '123-abc', 'solo'], '');
    assert.equal(code, 2, stderr);
    assert.match(stderr, /no machine solo waiting in run 123-abc/);
  });
});
