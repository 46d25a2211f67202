import { renameSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { GuestProcess } from '../agent/process.js';
import { HANDOVER_BANNER_WAIT_MS } from '../backends/detached.js';
import { MachineCrashedError } from '../errors.js';
import { profileNamed } from '../guest/profiles/index.js';
import { setUpRestoredGuest } from '../machine/guest-setup.js';
import { isRunning } from '../runtime/detached.js';
import { LineSplitter } from '../util/lines.js';
import { privateSocket } from '../util/private.js';
import { HubAgent } from './hub-agent.js';
import { type HubReply, type HubRequest, hubSocket } from './hub-protocol.js';
import { projectVmms } from './vmms.js';

/** How long the agent may take to answer its probe, at least. */
const AGENT_ANSWER_MS = 15_000;

/**
 * The agent hub of a project VM: a small detached process that holds the VM's one backdoor
 * connection (QEMU's socket takes one client at a time) and serves any number of vmkit CLI
 * processes over `hub.sock`, so that two terminals can run `exec` at once and a command costs
 * no reconnect. It ends when its VMM ends or a signal comes: `exit` (hub-main's) ends the process.
 */
export async function runHub(
  runDir: string,
  name: string,
  bannerWaitMs: number,
  exit: (code: number) => void,
): Promise<void> {
  const vmms = projectVmms();
  const attached = await vmms.attach(name, runDir, { timeoutMs: 30_000 });
  const consoleTail = () => vmms.consoleTail(runDir);
  const attachAgent = (wait: number) =>
    vmms.attachAgent(name, runDir, {
      timeoutMs: Math.max(wait, AGENT_ANSWER_MS),
      bannerWaitMs: wait,
      consoleTail,
    });
  // Taken back from a borrower that just left: a handover (HANDOVER_BANNER_WAIT_MS).
  const agent = new HubAgent(name, await attachAgent(bannerWaitMs), () =>
    attachAgent(HANDOVER_BANNER_WAIT_MS),
  );
  // The VMM's control socket takes one client too: other vmkit processes need it (snapshots, quit).
  attached.closeControl();
  const socketPath = hubSocket(runDir);
  rmSync(socketPath, { force: true });
  const server = createServer((client) => serveClient(client, agent, name, consoleTail));
  const end = (code: number) => {
    server.close();
    rmSync(socketPath, { force: true });
    agent.close();
    attached.detach();
    exit(code);
  };
  // The VMM's death breaks every client's command; then the hub has nothing left to serve.
  const watch = setInterval(() => {
    if (isRunning(attached.record)) return;
    clearInterval(watch);
    agent.fail(new MachineCrashedError(name, 'QEMU exited', consoleTail()));
    setTimeout(() => end(1), 200);
  }, 250);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => end(0));
  // Bound under another name and renamed once listening: a client that sees hub.sock can connect
  // (between bind and listen, a connect is refused). The name is no longer than xfer.sock, whose
  // length decides whether the run folder's socket paths fit.
  const binding = join(runDir, `h${process.pid.toString(36)}.s`);
  rmSync(binding, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(binding, resolve);
  });
  privateSocket(binding); // whoever connects runs commands as root in the guest, and reads host files
  renameSync(binding, socketPath);
  process.stdout.write(`hub for ${name} listening on ${socketPath}\n`);
}

function serveClient(client: Socket, agent: HubAgent, name: string, consoleTail: () => string) {
  const lines = new LineSplitter();
  let process: GuestProcess | undefined;
  const send = (reply: HubReply) => {
    if (!client.destroyed) client.write(`${JSON.stringify(reply)}\n`);
  };
  const fail = (error: Error) => send({ type: 'error', message: error.message, name: error.name });
  const handle = async (request: HubRequest) => {
    switch (request.type) {
      case 'run': {
        const result = await agent.use((channel) => channel.run(request.script, request.timeoutMs));
        send({
          type: 'result',
          status: result.status,
          timedOut: result.timedOut,
          stdout: result.stdout.toString('base64'),
          stderr: result.stderr.toString('base64'),
        });
        return;
      }
      case 'upload': {
        const result = await agent.use((channel) =>
          channel.upload(request.hostPath, request.guestPath, request.timeoutMs),
        );
        send({
          type: 'result',
          status: result.status,
          timedOut: result.timedOut,
          stdout: '',
          stderr: result.stderr.toString('base64'),
        });
        return;
      }
      case 'spawn': {
        // The process holds the agent until it exits: a lend waits for it.
        const running = agent.begin();
        const started = await agent
          .use((channel) =>
            GuestProcess.start(
              channel,
              name,
              request.script,
              {
                onStdout: (data) => send({ type: 'output', stream: 'stdout', data: data.toString('base64') }),
                onStderr: (data) => send({ type: 'output', stream: 'stderr', data: data.toString('base64') }),
              },
              consoleTail,
            ),
          )
          .catch((error: Error) => {
            running();
            throw error;
          });
        process = started;
        send({ type: 'started', id: started.id });
        started.exited.then(
          (exit) => send({ type: 'exit', status: exit.exitCode, timedOut: exit.timedOut }),
          fail,
        );
        started.exited.finally(running).catch(() => {});
        return;
      }
      case 'restored': {
        await agent.use((channel) =>
          setUpRestoredGuest(channel, profileNamed(request.profile), request.setup, {
            what: `the set-up of restored VM ${name}`,
            name,
            consoleTail,
          }),
        );
        send({ type: 'result', status: 0, timedOut: false, stdout: '', stderr: '' });
        return;
      }
      case 'lend': {
        const takeBack = await agent.lend(request.borrower, request.timeoutMs);
        client.once('close', takeBack);
        if (client.destroyed) takeBack();
        send({ type: 'lent' });
        return;
      }
      case 'stdin':
        await new Promise<void>((resolve, reject) =>
          process?.stdin.write(Buffer.from(request.data, 'base64'), (error) =>
            error ? reject(error) : resolve(),
          ),
        );
        return;
      case 'eof':
        process?.stdin.end();
        return;
      case 'signal':
        await process?.kill(request.signal);
        return;
    }
  };
  // Requests of one client run in order (stdin after spawn); different clients run side by side.
  let queue: Promise<void> = Promise.resolve();
  client.on('data', (chunk: Buffer) =>
    // Split as bytes, decoded a whole line at a time: a character may straddle two chunks.
    lines.push(chunk, (bytes) => {
      const line = bytes.toString('utf8');
      if (line.trim() === '') return;
      queue = queue.then(() => handle(JSON.parse(line) as HubRequest).catch(fail));
    }),
  );
  client.on('error', () => {});
  // A client that goes away mid-command (its terminal closed) takes its command with it.
  client.on('close', () => {
    if (process && !process.exit) process.kill('KILL').catch(() => {});
  });
}
