import { threadId } from 'node:worker_threads';
import type pg from 'pg';
import type { Logger } from 'pino';
import { checkOut, createPool, withClient, type CheckedOut } from '../src/db.ts';
import type { ThreadConfig } from '../src/protocol.ts';
import { hasDue } from '../src/sql/jobs.ts';

/**
 * A thread's two pools: one for its own claims and outcome writes, one for
 * its handlers, so a handler that holds every connection cannot starve the
 * claims and outcome writes.
 */
export interface ThreadPools {
  /** Claims and outcome writes. */
  readonly system: pg.Pool;
  /** The handlers' pool, opened on first use: many tasks never touch the database. */
  handlers(): pg.Pool;
  /** A client of the handlers' pool; a wait for one that times out is named for what it is. */
  checkOutHandlerClient(): Promise<CheckedOut>;
}

export function openThreadPools(config: ThreadConfig, logger: Logger): ThreadPools {
  const onIdleError = (err: Error) => logger.debug({ err: err.message }, 'idle database connection closed');
  // Claims and outcome writes keep their connections open: a job arriving
  // after a quiet spell must not pay for a new connection (and its auth).
  const system = createPool(config.connectionString, {
    max: config.systemConnections,
    min: config.systemConnections,
    applicationName: `grapevine-thread-${threadId}`,
    onIdleError,
    preparedStatements: config.preparedStatements,
    // A claim sends BEGIN, itself and COMMIT without waiting between them (claimBatch).
    pipeline: true,
  });
  void warmConnections(system, config, logger);

  let handlerPool: pg.Pool | null = null;
  const handlers = () => {
    handlerPool ??= createPool(config.connectionString, {
      max: config.handlerConnections,
      applicationName: `grapevine-handler-${threadId}`,
      onIdleError,
      preparedStatements: config.preparedStatements,
    });
    return handlerPool;
  };

  async function checkOutHandlerClient(): Promise<CheckedOut> {
    const pool = handlers();
    try {
      return await checkOut(pool);
    } catch (err) {
      // pg says only "timeout exceeded when trying to connect", which reads like
      // the database is down; here it means the handlers hold every connection.
      if (/timeout exceeded when trying to connect/.test((err as Error).message) && pool.totalCount >= config.handlerConnections) {
        throw new Error(
          `handler pool exhausted: all ${config.handlerConnections} connections of thread ${threadId} are in use ` +
            `(${pool.waitingCount} waiting); release connections sooner or raise handlerConnections`,
          { cause: err },
        );
      }
      throw err;
    }
  }

  return { system, handlers, checkOutHandlerClient };
}

/**
 * Opens the claim connections now, and has each look at the queue once
 * (`has_due`). A new backend's first statement on the jobs table loads the
 * table's and its indexes' catalog entries, which would otherwise fall on
 * this thread's first claim, typically a crashed thread's job re-run on its
 * replacement. A read, so it takes no row locks and fires no triggers; a
 * claim of nothing would have warmed a little more but runs an UPDATE.
 */
async function warmConnections(system: pg.Pool, config: ThreadConfig, logger: Logger): Promise<void> {
  // Concurrent checkouts, so that each connection of the pool is warmed.
  const results = await Promise.allSettled(
    Array.from({ length: config.systemConnections }, () =>
      withClient(system, (client) => hasDue(client, config.schema, { tasks: [], queues: config.queues })),
    ),
  );
  for (const r of results)
    if (r.status === 'rejected') logger.debug({ err: (r.reason as Error).message }, 'could not warm a claim connection');
}
