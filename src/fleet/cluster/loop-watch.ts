/**
 * Says when this process's event loop was held up for longer than `thresholdMs`: meanwhile the
 * node's lease was not renewed (every third of its TTL), and a hold-up near the TTL makes the node
 * dead to the cluster although it runs. Returns what stops the watch.
 */
export function watchEventLoop(log: (line: string) => void, thresholdMs: number, everyMs = 500): () => void {
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    const late = now - last - everyMs;
    last = now;
    if (late > thresholdMs)
      log(`the event loop was held up for ${Math.round(late)} ms (the lease is renewed only between)`);
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
