import { Listener, type ListenerOptions } from './listener.ts';
import { NOTIFY_DROP_USAGE } from './notification.ts';

/**
 * Callers waiting for something the database will announce (a job that
 * finishes, a supervisor's response), behind one lazily started LISTEN
 * connection. A notification wakes the waits whose key it names; a reconnect
 * wakes them all, because what was announced meanwhile is only in the table.
 * So does every health check of the connection that finds PostgreSQL's NOTIFY
 * queue half full or more (no notification is sent then: notify() in src/schema/functions/notify.sql), and
 * the first one that finds it below that again.
 *
 * Without LISTEN (`pollIntervalMs`, or once the listener finds it cannot work
 * through a pooler in transaction mode) each wait looks again every interval
 * instead: a wait ends up to an interval after its answer is stored.
 */
export class Waiters {
  private readonly byKey = new Map<string, Set<() => void>>();
  /** Whether the last health check found notifications being dropped. */
  private dropping = false;
  private readonly options: ListenerOptions;
  /** Which keys a notification payload names (keys nobody waits for are ignored). */
  private readonly named: (payload: string, keys: Iterable<string>) => Iterable<string>;
  private listening: Promise<Listener | null> | null = null;
  /** Whether waits poll (no LISTEN), from the start or since LISTEN turned out unavailable. */
  private polling: boolean;
  private readonly pollIntervalMs: number;
  private pollTimer: NodeJS.Timeout | null = null;

  constructor(
    options: ListenerOptions,
    named: (payload: string, keys: Iterable<string>) => Iterable<string>,
    poll: { poll: boolean; pollIntervalMs: number },
  ) {
    this.options = options;
    this.named = named;
    this.polling = poll.poll;
    this.pollIntervalMs = poll.pollIntervalMs;
  }

  /**
   * Resolves with what `poll` returns once it returns something other than
   * undefined. `poll` runs right after the wait is registered (so a change
   * that lands in between is not missed) and again on every wake-up; what it
   * throws rejects the wait. After `timeoutMs`, `onTimeout` decides: a value
   * resolves, an Error rejects.
   */
  async wait<T>(key: string, poll: () => Promise<T | undefined>, timeoutMs: number, onTimeout: () => T | Error): Promise<T> {
    await this.listen();
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const finish = (err: unknown, value?: T) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const set = this.byKey.get(key);
        set?.delete(check);
        if (set?.size === 0) this.byKey.delete(key);
        if (this.byKey.size === 0) this.stopPolling();
        if (err) reject(err);
        else resolve(value as T);
      };
      const check = () => {
        poll().then(
          (value) => {
            if (value !== undefined) finish(null, value);
          },
          (err) => finish(err),
        );
      };
      const timer = setTimeout(() => {
        const outcome = onTimeout();
        if (outcome instanceof Error) finish(outcome);
        else finish(null, outcome);
      }, timeoutMs);
      let set = this.byKey.get(key);
      if (!set) this.byKey.set(key, (set = new Set()));
      set.add(check);
      this.startPolling();
      check();
    });
  }

  async stop(): Promise<void> {
    this.stopPolling();
    const listening = this.listening;
    this.listening = null;
    if (listening) await (await listening.catch(() => null))?.stop();
  }

  /** Starts the LISTEN connection on first use (none when polling); a start that failed is tried again by the next wait. */
  private listen(): Promise<Listener | null> {
    if (this.polling) return Promise.resolve(null);
    this.listening ??= this.start().catch((err) => {
      this.listening = null;
      throw err;
    });
    return this.listening;
  }

  private async start(): Promise<Listener> {
    const listener = new Listener(this.options);
    listener.on('notification', (_channel: string, payload: string) => {
      for (const key of this.named(payload, this.byKey.keys())) this.wake(key);
    });
    listener.on('connected', () => this.wakeAll());
    listener.once('unavailable', (err: Error) => {
      this.polling = true;
      this.options.logger.warn({ err: err.message, pollIntervalMs: this.pollIntervalMs }, 'LISTEN is not available; waits poll instead');
      this.startPolling();
      this.wakeAll();
    });
    listener.on('queueUsage', (usage: number) => {
      const dropping = usage >= NOTIFY_DROP_USAGE;
      if (dropping || this.dropping) this.wakeAll();
      this.dropping = dropping;
    });
    await listener.start();
    return listener;
  }

  private startPolling(): void {
    if (!this.polling || this.pollTimer || this.byKey.size === 0) return;
    this.pollTimer = setInterval(() => this.wakeAll(), this.pollIntervalMs);
  }

  private stopPolling(): void {
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = null;
  }

  private wakeAll(): void {
    for (const key of this.byKey.keys()) this.wake(key);
  }

  /** Runs the polls of the waits on `key` now, as a notification naming it would. */
  wake(key: string): void {
    for (const check of [...(this.byKey.get(key) ?? [])]) check();
  }
}
