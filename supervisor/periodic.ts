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
  private running = false;
  private stopped = false;

  constructor(intervalMs: number, run: () => Promise<unknown>) {
    this.intervalMs = intervalMs;
    this.run = run;
  }

  start(): void {
    if (this.timer || this.stopped) return;
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = true;
      void this.run().finally(() => {
        this.running = false;
      });
    }, this.intervalMs);
  }

  /** No further runs; one under way finishes on its own. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
