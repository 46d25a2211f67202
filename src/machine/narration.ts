/** What machine.log and machine.nested report to: the machine's log, with timings. */
export type Narrator = (line: string) => void;

/** Runs `body` as a named step: logs its start, then how it ended and how long it took. */
export async function nested<T>(log: Narrator, message: string, body: () => Promise<T> | T): Promise<T> {
  const started = performance.now();
  log(`${message}...`);
  try {
    const result = await body();
    log(`${message}: ok (${Math.round(performance.now() - started)} ms)`);
    return result;
  } catch (error) {
    const why = error instanceof Error ? `${error.name}: ${error.message.split('\n')[0]}` : String(error);
    log(`${message}: FAILED after ${Math.round(performance.now() - started)} ms (${why})`);
    throw error;
  }
}
