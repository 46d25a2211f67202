import { type DeadlineOptions, withTimeout } from '../util/time.js';

/**
 * What a backdoor channel's requests wait for while the guest comes back from a reset: the
 * recovery (banner, then set-up) of the latest reset, each chained after the one before.
 */
export class ResetHold {
  private current?: Promise<void>;
  private resets = 0;

  /**
   * Starts a recovery after any under way; `failed` gets its error unless another reset came.
   * `latest` tells a recovery whether it is still the newest: a guest's reboot can reset it twice
   * in a row, and then only the last recovery sets the guest up.
   */
  begin(recover: (latest: () => boolean) => Promise<void>, failed: (error: Error) => void): void {
    const generation = ++this.resets;
    const latest = () => generation === this.resets;
    const hold: Promise<void> = (this.current ?? Promise.resolve())
      .then(() => recover(latest))
      .then(
        () => {
          if (this.current === hold) this.current = undefined;
        },
        (error: Error) => {
          if (latest()) failed(error);
          if (this.current === hold) this.current = undefined;
        },
      );
    this.current = hold;
  }

  /** Waits while a recovery is under way (again when the guest resets meanwhile), at most `timeoutMs`. */
  async wait(awaited: string, timeoutMs: number | undefined, options: DeadlineOptions): Promise<void> {
    const deadline = timeoutMs === undefined ? undefined : performance.now() + timeoutMs;
    while (this.current) {
      const hold = this.current;
      if (deadline === undefined) await hold;
      else await withTimeout(hold, Math.max(1, Math.round(deadline - performance.now())), awaited, options);
    }
  }
}
