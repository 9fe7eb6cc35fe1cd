/**
 * The connections a supervisor's threads share: one count in shared memory
 * that every thread of every generation draws from before it opens a
 * connection, and gives back when the connection ends. Threads are separate
 * isolates with pools of their own, so the count is a SharedArrayBuffer
 * (given to each thread in its workerData) updated with Atomics.
 *
 * A thread that finds the count at its limit waits, and says so (`demand`):
 * the others then close their idle connections (all handlers' ones, and
 * claim connections, keeping one per thread where the budget is ample), so a waiting thread gets one as soon as
 * some connection is idle anywhere. A thread that dies cannot give its
 * connections back: the supervisor takes them back from its slot (reclaim).
 */

/** Slots of the shared array: the counters first, then one slot per thread. */
const LIMIT = 0;
const IN_USE = 1;
const HANDLER_LIMIT = 2;
const HANDLER_IN_USE = 3;
const WAITING = 4;
/** Bumped on every release: waiters sleep on it. */
const RELEASES = 5;
/** Bumped by a waiter: threads sleep on it and close idle connections when it moves. */
const DEMAND = 6;
/** The supervisor's current thread count, for the fair share. */
const THREADS = 7;
/** Bumped by a waiter that has waited long: threads then close idle connections however recently used. */
const URGENT = 8;
const HEADER = 9;
/** Each thread slot: its owner's threadId, its connections, of which handlers', and its requests waiting. */
const SLOT_WORDS = 4;
/** Two generations of the most threads a supervisor may run (256), with room to spare. */
const SLOTS = 600;

/** Who a connection is for: the handlers' share is capped so that claims and outcome writes always find one. */
export type ConnectionKind = 'system' | 'handler';

/** Atomics.waitAsync (Node 16+; TypeScript types it from lib es2024 on). */
const waitAsync = (
  Atomics as unknown as {
    waitAsync(a: Int32Array, index: number, value: number, timeoutMs: number): { value: Promise<string> | string };
  }
).waitAsync;

/** The largest wait between looks at the count, should a wake-up be missed. */
const RECHECK_MS = 100;
/** A wait this long asks for idle connections that are in use now and then too (see urgency()). */
const URGENT_AFTER_MS = 250;

export class ConnectionBudget {
  readonly buffer: SharedArrayBuffer;
  private readonly a: Int32Array;
  private slot = -1;

  private constructor(buffer: SharedArrayBuffer) {
    this.buffer = buffer;
    this.a = new Int32Array(buffer);
  }

  /** A new budget of `limit` connections, of which handlers may hold `handlerLimit`. */
  static create(limit: number, handlerLimit: number, threads: number): ConnectionBudget {
    const budget = new ConnectionBudget(new SharedArrayBuffer((HEADER + SLOTS * SLOT_WORDS) * 4));
    Atomics.store(budget.a, LIMIT, limit);
    Atomics.store(budget.a, HANDLER_LIMIT, handlerLimit);
    Atomics.store(budget.a, THREADS, threads);
    return budget;
  }

  /** The same budget, seen from a thread (its workerData carries the buffer). */
  static attach(buffer: SharedArrayBuffer): ConnectionBudget {
    return new ConnectionBudget(buffer);
  }

  get limit(): number {
    return Atomics.load(this.a, LIMIT);
  }

  /** Connections open now, all threads together. */
  inUse(): number {
    return Atomics.load(this.a, IN_USE);
  }

  handlersInUse(): number {
    return Atomics.load(this.a, HANDLER_IN_USE);
  }

  /** Requests for a connection waiting now. */
  waiting(): number {
    return Math.max(0, Atomics.load(this.a, WAITING));
  }

  /**
   * Moves while some request has waited longer than URGENT_AFTER_MS. Until
   * then a thread keeps the idle connections it used a moment ago: closing
   * a connection a busy thread is about to reuse only to open another
   * elsewhere would make every claim pay for a new connection.
   */
  urgency(): number {
    return Atomics.load(this.a, URGENT);
  }

  /** After a SCALE: the fair share of each thread follows. */
  setThreads(threads: number): void {
    Atomics.store(this.a, THREADS, threads);
  }

  /** The budget divided by the threads: 0 when they are more than the connections. */
  fairShare(): number {
    return Math.floor(this.limit / Math.max(1, Atomics.load(this.a, THREADS)));
  }

  /** Called once by each thread before it opens a connection: its counts live in the slot, for reclaim(). */
  claimSlot(threadId: number): void {
    for (let i = 0; i < SLOTS; i++) {
      if (Atomics.compareExchange(this.a, HEADER + i * SLOT_WORDS, 0, threadId) === 0) {
        this.slot = i;
        return;
      }
    }
    throw new Error('no free connection budget slot: more threads than a supervisor can run');
  }

  /**
   * Waits until a connection of this kind fits, and counts it. Resolves with
   * the function that gives it back (call it once, when the connection ends).
   */
  async acquire(kind: ConnectionKind): Promise<() => void> {
    if (!this.tryAcquire(kind)) {
      // Counted in the slot too: a thread ended while it waits must not look like a waiter forever.
      this.countWaiting(1);
      const since = Date.now();
      try {
        for (;;) {
          const seen = Atomics.load(this.a, RELEASES);
          if (this.tryAcquire(kind)) break;
          if (Date.now() - since >= URGENT_AFTER_MS) Atomics.add(this.a, URGENT, 1);
          Atomics.add(this.a, DEMAND, 1);
          Atomics.notify(this.a, DEMAND);
          await waitAsync(this.a, RELEASES, seen, RECHECK_MS).value;
        }
      } finally {
        this.countWaiting(-1);
      }
    }
    let given = false;
    return () => {
      if (given) return;
      given = true;
      this.release(kind);
    };
  }

  /**
   * Calls `shed` whenever a thread starts or keeps waiting for a
   * connection, until the returned function is called.
   */
  onDemand(shed: () => void): () => void {
    let running = true;
    void (async () => {
      let seen = Atomics.load(this.a, DEMAND);
      while (running) {
        await waitAsync(this.a, DEMAND, seen, 1_000).value;
        const now = Atomics.load(this.a, DEMAND);
        if (now !== seen && running) shed();
        seen = now;
      }
    })();
    return () => {
      running = false;
    };
  }

  /**
   * The connections of a thread that is gone (ended with its generation, or
   * crashed): they closed with it, but it could not count them out.
   */
  reclaim(threadId: number): void {
    for (let i = 0; i < SLOTS; i++) {
      const base = HEADER + i * SLOT_WORDS;
      if (Atomics.load(this.a, base) !== threadId) continue;
      const handlers = Atomics.exchange(this.a, base + 2, 0);
      const all = Atomics.exchange(this.a, base + 1, 0);
      const waiting = Atomics.exchange(this.a, base + 3, 0);
      Atomics.sub(this.a, HANDLER_IN_USE, handlers);
      Atomics.sub(this.a, IN_USE, all);
      Atomics.sub(this.a, WAITING, waiting);
      Atomics.store(this.a, base, 0);
      this.wakeWaiters();
      return;
    }
  }

  /** In the order that leaves the total too high, never too low, should the thread end in between. */
  private countWaiting(n: 1 | -1): void {
    const slot = this.slot >= 0 ? HEADER + this.slot * SLOT_WORDS + 3 : -1;
    if (n > 0) Atomics.add(this.a, WAITING, n);
    if (slot >= 0) Atomics.add(this.a, slot, n);
    if (n < 0) Atomics.add(this.a, WAITING, n);
  }

  private tryAcquire(kind: ConnectionKind): boolean {
    const a = this.a;
    if (kind === 'handler' && !increaseBelow(a, HANDLER_IN_USE, Atomics.load(a, HANDLER_LIMIT))) return false;
    if (!increaseBelow(a, IN_USE, Atomics.load(a, LIMIT))) {
      if (kind === 'handler') Atomics.sub(a, HANDLER_IN_USE, 1);
      return false;
    }
    // Counted in the total first: a thread ended between the two steps
    // leaves the budget one short rather than one over.
    if (this.slot >= 0) {
      const base = HEADER + this.slot * SLOT_WORDS;
      Atomics.add(a, base + 1, 1);
      if (kind === 'handler') Atomics.add(a, base + 2, 1);
    }
    return true;
  }

  private release(kind: ConnectionKind): void {
    const a = this.a;
    if (this.slot >= 0) {
      const base = HEADER + this.slot * SLOT_WORDS;
      if (kind === 'handler') Atomics.sub(a, base + 2, 1);
      Atomics.sub(a, base + 1, 1);
    }
    if (kind === 'handler') Atomics.sub(a, HANDLER_IN_USE, 1);
    Atomics.sub(a, IN_USE, 1);
    this.wakeWaiters();
  }

  private wakeWaiters(): void {
    Atomics.add(this.a, RELEASES, 1);
    Atomics.notify(this.a, RELEASES);
  }
}

/** Adds one to a[i] if it stays at or below `limit`; false if it would not. */
function increaseBelow(a: Int32Array, i: number, limit: number): boolean {
  for (;;) {
    const now = Atomics.load(a, i);
    if (now >= limit) return false;
    if (Atomics.compareExchange(a, i, now, now + 1) === now) return true;
  }
}

/** How a supervisor's maxConnections is divided (docs/deployment.md#connections). */
export interface BudgetSplit {
  /** The supervisor's own pool: heartbeat, control plane, maintenance, releases, its log; migrations at start. */
  supervisor: number;
  /** What its threads share, for claims, outcome writes and handlers. */
  threads: number;
  /** The most of `threads` that handlers' connections may hold together: one is always left for claims and outcome writes. */
  handlers: number;
}

/**
 * The smallest budget: one connection for the supervisor and two for its
 * threads, so that handlers, which may hold one, never hold the last: an
 * exactly-once transaction waits on its connection for a progress write on
 * another.
 */
export const MIN_CONNECTIONS = 3;

export function splitBudget(maxConnections: number): BudgetSplit {
  // Two let the heartbeat go on while a long maintenance statement or a release runs.
  const supervisor = maxConnections >= 4 ? 2 : 1;
  const threads = maxConnections - supervisor;
  return { supervisor, threads, handlers: Math.max(1, threads - 1) };
}

/**
 * The most connections a supervisor opens with `threads` threads: its own,
 * and what the threads can hold (each at most `perThread`) within its budget.
 */
export function connectionsWith(split: BudgetSplit, threads: number, perThread: number): number {
  return split.supervisor + Math.min(split.threads, threads * perThread);
}
