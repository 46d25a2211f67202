import type { NodeJoin } from '../../fleet/cluster/node-join.js';

/**
 * An agent's shutdown: it leaves the cluster (scheduler, watch, moves), finishes the server's
 * requests while its lease is still renewed (a restart within the TTL, counted from the process's
 * end, keeps the node's slots), and only then lets the lease go. Every 10 s it says what it still
 * waits for; past `deadlineMs` it gives up and ends the process (a crash, to the cluster: moves
 * and intents are made to survive one), so that a shutdown never hangs.
 */
export function shutDownAgent(options: {
  why: string;
  join: NodeJoin | undefined;
  closeServer: () => Promise<void>;
  log: (line: string) => void;
  deadlineMs: number;
}): Promise<void> {
  const { join, closeServer, log } = options;
  log(`${options.why}: finishing requests in flight; instances stay as they are`);
  const began = Date.now();
  let phase = join
    ? 'leaving the cluster (the scheduler, the watch, a move in progress)'
    : 'finishing requests';
  const after = () => `${Math.round((Date.now() - began) / 1000)} s`;
  const slow = setInterval(
    () => log(`shutdown: still ${phase} after ${after()} (open: ${openResources()})`),
    10_000,
  );
  slow.unref();
  const deadline = setTimeout(() => {
    log(`shutdown: gave up after ${after()}, still ${phase} (open: ${openResources()})`);
    process.exit(1);
  }, options.deadlineMs);
  deadline.unref();
  const finishRequests = async () => {
    phase = 'finishing requests';
    await closeServer();
    phase = 'letting the lease go';
  };
  return (
    join?.leave(finishRequests).catch((error: Error) => log(`leaving the cluster: ${error.message}`)) ??
    Promise.resolve()
  )
    .then(finishRequests) // a second close does nothing: this is for a leave that failed first
    .catch((error: Error) => log(`shutdown: ${error.message}`))
    .finally(() => {
      clearInterval(slow);
      clearTimeout(deadline);
    });
}

/** What keeps the process alive, by kind (timers, sockets, ...), for a shutdown that takes long. */
export function openResources(): string {
  const kinds = new Map<string, number>();
  for (const kind of process.getActiveResourcesInfo()) kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  return [...kinds].map(([kind, count]) => `${count} ${kind}`).join(', ') || 'nothing';
}
