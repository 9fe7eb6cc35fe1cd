/**
 * A function run every `intervalMs` by a supervisor's timer: the heartbeat,
 * the sweep, the maintenance tick. One contract for all of them: start()
 * and stop() may be called in any order and any number of times (a stop
 * before the start, or a second stop, does nothing; a start after a stop
 * does not revive it), and a run still going when the next is due is not
 * started twice, so a stalled heartbeat cannot pile up and take every
 * connection.
 */
export class Periodic {
  private readonly intervalMs: number;
  private readonly run: () => Promise<unknown>;
  private timer: NodeJS.Timeout | null = null;
  private current: Promise<unknown> | null = null;
  private stopped = false;

  constructor(intervalMs: number, run: () => Promise<unknown>) {
    this.intervalMs = intervalMs;
    this.run = run;
  }

  start(): void {
    if (this.timer || this.stopped) return;
    this.timer = setInterval(() => {
      if (this.current) return;
      this.current = this.run().finally(() => {
        this.current = null;
      });
    }, this.intervalMs);
  }

  /** No further runs; one under way finishes on its own. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Resolves once no run is under way, so a stop can wait for it before it ends the pool the run uses. */
  async idle(): Promise<void> {
    while (this.current) await this.current.catch(() => {});
  }
}
