// Console benchmark: a command's round trip through a console shell (login, su, sentinel prompt,
// markers around each command) against vmkit's backdoor, in the same run, and the time from a
// login prompt to the first root command. Run it with `npm run bench:console` (add
// `-- --iterations N`). Progress goes to stderr, one JSON object to stdout.
//
// Machines: the tiny image (backdoor), and the tiny kernel with a login console (getty on
// ttyS0, a user with a colourful prompt, su), booted without the backdoor. Round trips alternate
// between the two, each `true`, after a warm-up.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildImage, startMachine } from 'vmkit';
import { loginInitrd, ROOT_PASSWORD, USER } from '../test/vm/console-targets.js';
import {
  describeEnvironment,
  environment,
  log,
  median,
  parseIntOptions,
  ratio,
  round,
  UsageError,
} from './lib.js';

async function main(): Promise<void> {
  const options = parseIntOptions('usage: npm run bench:console -- [--iterations N]', {
    iterations: { default: 50, min: 5 },
  });
  if (!options) return;
  const { iterations } = options;
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-bench-console-'));
  const tiny = await buildImage('tiny');
  const initrd = await loginInitrd(dir);
  log('starting the two machines');
  const [agentVm, consoleVm] = await Promise.all([
    startMachine({ name: 'backdoor' }),
    startMachine({
      name: 'console',
      image: { kernel: tiny.kernel, initrd, append: tiny.cmdline },
      readyWhen: /login: $/,
    }),
  ]);
  try {
    const loginStarted = performance.now();
    const shell = await consoleVm.consoleShell({
      user: USER.name,
      password: USER.password,
      escalate: 'su',
      rootPassword: ROOT_PASSWORD,
    });
    await shell.succeed('true');
    const loginToRootMs = round(performance.now() - loginStarted);
    for (let i = 0; i < 5; i++) {
      await shell.execute('true');
      await agentVm.execute('true');
    }
    const viaConsole: number[] = [];
    const viaBackdoor: number[] = [];
    for (let i = 0; i < iterations; i++) {
      let began = performance.now();
      await shell.execute('true');
      viaConsole.push(performance.now() - began);
      began = performance.now();
      await agentVm.execute('true');
      viaBackdoor.push(performance.now() - began);
    }
    const consoleMs = round(median(viaConsole));
    const backdoorMs = round(median(viaBackdoor));
    log(`console ${consoleMs} ms, backdoor ${backdoorMs} ms, login to root ${loginToRootMs} ms`);
    process.stdout.write(
      `${JSON.stringify(
        {
          ...describeEnvironment(await environment()),
          iterations,
          roundTripMs: { consoleShell: consoleMs, backdoor: backdoorMs },
          consoleToBackdoorRatio: ratio(consoleMs, backdoorMs),
          loginPromptToFirstRootCommandMs: loginToRootMs,
        },
        null,
        2,
      )}\n`,
    );
  } finally {
    await Promise.allSettled([agentVm.close(), consoleVm.close()]);
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  process.stderr.write(`bench: ${error instanceof UsageError ? error.message : (error as Error).stack}\n`);
  process.exit(error instanceof UsageError ? 2 : 1);
});
