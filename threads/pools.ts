import { threadId } from 'node:worker_threads';
import type pg from 'pg';
import type { Logger } from 'pino';
import { ConnectionBudget } from '../src/connection-budget.ts';
import { checkOut, createPool, withClient, type CheckedOut } from '../src/db.ts';
import type { ThreadConfig } from '../src/protocol.ts';
import { hasDue } from '../src/sql/jobs.ts';

/**
 * A thread's two pools: one for its own claims and outcome writes, one for
 * its handlers, so a handler that holds every connection cannot starve the
 * claims and outcome writes. Both open connections only within the
 * supervisor's budget (src/connection-budget.ts), which the handlers' pools
 * of all threads may fill but for one connection.
 */
export interface ThreadPools {
  /** Claims and outcome writes. */
  readonly system: pg.Pool;
  /** The handlers' pool, opened on first use: many tasks never touch the database. */
  handlers(): pg.Pool;
  /** A client of the handlers' pool; a wait for one that times out is named for what it is. */
  checkOutHandlerClient(): Promise<CheckedOut>;
}

/** How recently a pool must have been used for its idle connections to be kept from a waiting thread (unless the wait is long). */
const QUIET_MS = 50;

export function openThreadPools(config: ThreadConfig, logger: Logger): ThreadPools {
  const onIdleError = (err: Error) => logger.debug({ err: err.message }, 'idle database connection closed');
  const budget = ConnectionBudget.attach(config.budget);
  budget.claimSlot(threadId);
  // Claims and outcome writes keep their connections open: a job arriving
  // after a quiet spell must not pay for a new connection (and its auth).
  // Unless another thread waits for one: see shed().
  const system = createPool(config.connectionString, {
    max: config.systemConnections,
    min: config.systemConnections,
    gate: () => budget.acquire('system'),
    applicationName: `grapevine-thread-${threadId}`,
    onIdleError,
    preparedStatements: config.preparedStatements,
    // A claim sends BEGIN, itself and COMMIT without waiting between them (claimBatch).
    pipeline: true,
  });
  // Warmed only as far as this thread's share of the budget goes: a warm-up
  // that had to wait would take connections from busy threads.
  void warmConnections(system, config, Math.min(config.systemConnections, budget.fairShare()), logger);

  let handlerPool: pg.Pool | null = null;
  const handlers = () => {
    if (!handlerPool) {
      handlerPool = createPool(config.connectionString, {
        max: config.handlerConnections,
        applicationName: `grapevine-handler-${threadId}`,
        onIdleError,
        preparedStatements: config.preparedStatements,
        gate: () => budget.acquire('handler'),
      });
      watch(handlerPool);
    }
    return handlerPool;
  };

  /**
   * While another thread (or this one) waits for a connection, close the idle
   * ones: every handlers' connection, and the claim connections but one
   * (none unless the threads' share is at least twice the threads), which
   * keeps a warm connection for the next claim where the budget has room
   * for it. A pool
   * used in the last QUIET_MS is left alone unless a wait has gone on long
   * (budget.urgency()): under load the threads would otherwise close and
   * reopen each other's connections for every claim.
   */
  let seenUrgency = budget.urgency();
  function shed(): void {
    if (budget.waiting() <= 0) return;
    const urgency = budget.urgency();
    const urgent = urgency !== seenUrgency;
    seenUrgency = urgency;
    const now = Date.now();
    const quiet = (pool: pg.Pool) => urgent || now - (lastUsed.get(pool) ?? 0) >= QUIET_MS;
    if (handlerPool && quiet(handlerPool)) closeIdle(handlerPool, handlerPool.idleCount);
    // One kept per thread only while that leaves half the share to the others: with every thread
    // keeping one, a handler waiting for a connection could wait for good.
    if (quiet(system)) closeIdle(system, system.totalCount - (budget.fairShare() >= 2 ? 1 : 0));
  }
  let shedQueued = false;
  // A connection returned to its pool is idle a moment later.
  function shedSoon(): void {
    if (shedQueued || budget.waiting() <= 0) return;
    shedQueued = true;
    setImmediate(() => {
      shedQueued = false;
      shed();
    });
  }
  const lastUsed = new Map<pg.Pool, number>();
  function watch(pool: pg.Pool): void {
    pool.on('acquire', () => lastUsed.set(pool, Date.now()));
    pool.on('release', shedSoon);
  }
  watch(system);
  budget.onDemand(shed);

  return { system, handlers, checkOutHandlerClient: () => checkOut(handlers()) };
}

/**
 * Closes up to n of a pool's idle connections. A checkout takes an idle
 * connection before it opens a new one, and one given back with an error is
 * closed, so this goes through pg's public interface only.
 */
function closeIdle(pool: pg.Pool, n: number): void {
  // Idle connections and waiting checkouts never coexist for long: a waiting one takes the idle one.
  if (pool.waitingCount > 0) return;
  for (let i = 0; i < Math.min(n, pool.idleCount); i++) {
    pool.connect((err, _client, done) => {
      if (!err) done(new Error('closed for a thread waiting for a connection'));
    });
  }
}

/**
 * Opens the claim connections now, and has each look at the queue once
 * (`has_due`). A new backend's first statement on the jobs table loads the
 * table's and its indexes' catalog entries, which would otherwise fall on
 * this thread's first claim, typically a crashed thread's job re-run on its
 * replacement. A read, so it takes no row locks and fires no triggers; a
 * claim of nothing would have warmed a little more but runs an UPDATE.
 */
async function warmConnections(system: pg.Pool, config: ThreadConfig, count: number, logger: Logger): Promise<void> {
  // Concurrent checkouts, so that each connection of the pool is warmed.
  const results = await Promise.allSettled(
    Array.from({ length: count }, () =>
      withClient(system, (client) => hasDue(client, config.schema, { tasks: [], queues: config.queues })),
    ),
  );
  for (const r of results)
    if (r.status === 'rejected') logger.debug({ err: (r.reason as Error).message }, 'could not warm a claim connection');
}
