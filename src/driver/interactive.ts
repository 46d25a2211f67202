import repl from 'node:repl';
import type { TestBody, TestDefinition } from './definition.js';

/**
 * `vmkit run --interactive`: the script's machines, started and set up as for its test, in a
 * node REPL (top-level await works) with the test's context in scope; no test body runs (the
 * NixOS driver's -I). The run ends, and the machines stop, when the REPL ends (.exit, Ctrl-D, or
 * the end of piped input).
 */
export function interactiveDefinition(definition: TestDefinition): TestDefinition {
  const session: TestBody = async (context) => {
    const names = Object.keys(definition.machines);
    process.stderr.write(
      `vmkit: machines ${names.join(', ')} are up; in scope: ${[...names, 'vlan', 'retry', 'sleep', 'joinAll', 'outputDir'].join(', ')}. End with .exit or Ctrl-D.\n`,
    );
    const server = repl.start({
      prompt: 'vmkit> ',
      input: process.stdin,
      output: process.stdout,
      terminal: Boolean(process.stdin.isTTY),
      useGlobal: false,
    });
    Object.assign(server.context, context);
    // With piped input the REPL ends at end of input, maybe while a command still runs: wait for it.
    const evaluate = server.eval;
    let pending: Promise<void> = Promise.resolve();
    const tracked: repl.REPLEval = function (this: repl.REPLServer, code, scope, file, done) {
      const finished = new Promise<void>((resolve) => {
        evaluate.call(this, code, scope, file, (error, result) => {
          done(error, result);
          resolve();
        });
      });
      pending = pending.then(() => finished);
    };
    (server as { eval: repl.REPLEval }).eval = tracked;
    await new Promise<void>((resolve) => server.on('exit', () => resolve()));
    await pending;
  };
  const { tests: _tests, test: _test, ...rest } = definition;
  return { ...rest, test: session };
}
