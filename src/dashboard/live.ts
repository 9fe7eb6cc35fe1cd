import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ListenTarget } from '../db.ts';
import { Listener } from '../listener.ts';
import type { Logger } from '../log.ts';
import { parseJobNotification, takeIds } from '../notification.ts';

export interface LiveOptions {
  listen: ListenTarget;
  /** Channels whose notifications mean "jobs changed". */
  channels: string[];
  /** The channel that names jobs whose progress changed while watched (the job page watches its job). */
  progressChannel: string;
  logger: Logger;
  /** What every browser gets as its `overview` event; computed once per tick for all of them. */
  snapshot: () => Promise<unknown>;
  /** How often the snapshot is refreshed while a browser watches. */
  intervalMs: number;
}

/** A notification burst is told to browsers at most this often. */
const NOTIFY_EVERY_MS = 500;
/** Progress ids are passed on at most this often, and at most this many per event. */
const PROGRESS_EVERY_MS = 200;
const PROGRESS_IDS = 1_000;
/** After the last browser leaves, the LISTEN connection stays this long (a page reload should not reconnect). */
const LINGER_MS = 30_000;
/** A comment this often keeps proxies from closing an idle stream. */
const KEEPALIVE_MS = 15_000;

/**
 * Server-sent events for every browser of one dashboard process, fed by ONE
 * LISTEN connection and one shared snapshot query, whatever the number of
 * browsers: a tab costs the database nothing of its own. Both exist only
 * while someone watches. Notification payloads are never forwarded (anyone
 * may NOTIFY): a browser only learns that jobs changed, and re-reads.
 */
export class LiveUpdates {
  private readonly clients = new Set<ServerResponse>();
  private listener: Listener | null = null;
  private ticker: NodeJS.Timeout | null = null;
  private keepalive: NodeJS.Timeout | null = null;
  private linger: NodeJS.Timeout | null = null;
  private notifyTimer: NodeJS.Timeout | null = null;
  private progressTimer: NodeJS.Timeout | null = null;
  private readonly progressIds = new Set<number>();
  private refreshing: Promise<void> | null = null;
  private again = false;
  private last: string | null = null;
  private closed = false;
  private readonly o: LiveOptions;

  constructor(options: LiveOptions) {
    this.o = options;
  }

  /** Browsers connected now (for tests and the bench). */
  get watchers(): number {
    return this.clients.size;
  }

  attach(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      // nginx would otherwise buffer the stream.
      'x-accel-buffering': 'no',
    });
    res.write('retry: 2000\n\n');
    this.clients.add(res);
    const detach = () => this.detach(res);
    req.on('close', detach);
    res.on('close', detach);
    if (this.last !== null) res.write(this.last);
    this.start();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const res of this.clients) res.end();
    this.clients.clear();
    await this.stop();
    await this.refreshing;
  }

  private detach(res: ServerResponse): void {
    if (!this.clients.delete(res) || this.clients.size > 0 || this.closed) return;
    this.linger = setTimeout(() => void this.stop(), LINGER_MS);
    this.linger.unref();
  }

  private start(): void {
    if (this.linger) clearTimeout(this.linger);
    this.linger = null;
    if (this.closed || this.listener) {
      if (!this.closed && this.last === null) this.refresh();
      return;
    }
    const listener = new Listener({
      ...this.o.listen,
      channels: [...this.o.channels, this.o.progressChannel],
      applicationName: 'grapevine-dashboard-listen',
      logger: this.o.logger,
    });
    this.listener = listener;
    listener.on('notification', (channel: string, payload: string) =>
      channel === this.o.progressChannel ? this.progressed(payload) : this.changed(),
    );
    // Notifications sent while it was away are gone: re-read.
    listener.on('connected', () => this.changed());
    listener.start().catch((err: Error) => {
      this.o.logger.warn({ err: err.message }, 'dashboard: cannot LISTEN; live updates come from the periodic refresh only');
      if (this.listener === listener) this.listener = null;
    });
    this.ticker = setInterval(() => this.refresh(), this.o.intervalMs);
    this.ticker.unref();
    this.keepalive = setInterval(() => this.broadcast(': keepalive\n\n'), KEEPALIVE_MS);
    this.keepalive.unref();
    this.refresh();
  }

  private async stop(): Promise<void> {
    for (const timer of [this.ticker, this.keepalive, this.linger, this.notifyTimer, this.progressTimer]) if (timer) clearTimeout(timer);
    this.ticker = this.keepalive = this.linger = this.notifyTimer = this.progressTimer = null;
    this.last = null;
    const listener = this.listener;
    this.listener = null;
    await listener?.stop();
  }

  /** A burst of notifications becomes one `jobs` event and one refresh per NOTIFY_EVERY_MS. */
  private changed(): void {
    if (this.notifyTimer || this.closed) return;
    this.notifyTimer = setTimeout(() => {
      this.notifyTimer = null;
      this.broadcast('event: jobs\ndata: {}\n\n');
      this.refresh();
    }, NOTIFY_EVERY_MS);
    this.notifyTimer.unref();
  }

  /**
   * Jobs whose progress was written while watched: their ids only (parsed,
   * so a forged payload passes on nothing but numbers), for the job pages
   * showing them to re-read the job.
   */
  private progressed(payload: string): void {
    const parsed = parseJobNotification(payload);
    if (parsed.kind !== 'ids' || this.closed) return;
    for (const id of takeIds(parsed.ranges, PROGRESS_IDS - this.progressIds.size)) this.progressIds.add(id);
    if (this.progressTimer) return;
    this.progressTimer = setTimeout(() => {
      this.progressTimer = null;
      const ids = [...this.progressIds].map(String);
      this.progressIds.clear();
      if (ids.length > 0) this.broadcast(`event: progress\ndata: ${JSON.stringify({ ids })}\n\n`);
    }, PROGRESS_EVERY_MS);
    this.progressTimer.unref();
  }

  private refresh(): void {
    if (this.refreshing) {
      this.again = true;
      return;
    }
    this.refreshing = (async () => {
      do {
        this.again = false;
        if (this.clients.size === 0) return;
        try {
          const message = `event: overview\ndata: ${JSON.stringify(await this.o.snapshot())}\n\n`;
          this.last = message;
          this.broadcast(message);
        } catch (err) {
          this.o.logger.warn({ err: (err as Error).message }, 'dashboard: could not read the overview');
        }
      } while (this.again && !this.closed);
    })().finally(() => {
      this.refreshing = null;
    });
  }

  private broadcast(message: string): void {
    for (const res of this.clients) res.write(message);
  }
}
