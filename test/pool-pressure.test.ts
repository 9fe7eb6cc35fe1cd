import { randomInt } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { DEFAULTS } from '../src/config.ts';
import { splitBudget } from '../src/connection-budget.ts';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';

const db = useMigratedSchema('pool_pressure');
const { client } = db;

// All of the budget's thread connections but one, which claims and outcome writes keep.
const HANDLER_CONNECTIONS = splitBudget(DEFAULTS.maxConnections).handlers;

describe('handlers that hold every handler connection of their thread', () => {
  it("do not stop claims and outcome writes, which use the thread's own system pool: other jobs finish meanwhile, then all of them, with no deadlock", async () => {
    const concurrency = 8;
    const holders = HANDLER_CONNECTIONS + 2;
    expect(holders).toBeLessThan(concurrency);
    const supervisor = await startTestSupervisor(db, {
      threads: 1,
      concurrency,
      leaseMs: 60_000,
      heartbeatIntervalMs: 500,
      reaperIntervalMs: 500,
      sweepIntervalMs: 200,
      shutdownGraceMs: 0,
    });
    const lock = randomInt(1, 2 ** 47);
    const locker = await db.pool.connect();
    try {
      await locker.query('SELECT pg_advisory_lock($1::bigint)', [lock]);
      const { rows } = await locker.query('SELECT pg_backend_pid() AS pid');
      const lockerPid: number = rows[0].pid;
      const waitingHandlers = async () => {
        const { rows } = await db.pool.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE application_name LIKE 'grapevine-handler-%' AND $1 = ANY(pg_blocking_pids(pid))`,
          [lockerPid],
        );
        return rows[0].n as number;
      };

      const held = await client.addJobs(Array.from({ length: holders }, () => ({ task: 'hold-handler-connection', payload: { lock } })));
      await eventually(async () => {
        const { rows } = await db.pool.query(
          `SELECT count(*)::int AS n FROM "${db.schema}".jobs WHERE id = ANY($1::bigint[]) AND state = 'running'`,
          [held],
        );
        return rows[0].n === holders && (await waitingHandlers()) === HANDLER_CONNECTIONS;
      }, `all ${holders} holders to be claimed, ${HANDLER_CONNECTIONS} of them holding every handler connection`);

      // The two free slots still claim, run and record jobs that need no
      // handler connection. One at a time: each is notified while a slot is
      // free and claimed by id (a backlog is pulled only once half a thread's
      // slots are free, which the holders prevent).
      for (let n = 1; n <= 5; n++) {
        const id = await client.addJob('square', { n: n * n });
        expect(await client.waitForJob(id, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', attempts: 1, result: { root: n } });
      }

      // The holders are still waiting, and their pool never grew past its size.
      expect(await waitingHandlers()).toBe(HANDLER_CONNECTIONS);
      const { rows: states } = await db.pool.query(`SELECT DISTINCT state FROM "${db.schema}".jobs WHERE id = ANY($1::bigint[])`, [held]);
      expect(states).toEqual([{ state: 'running' }]);

      await locker.query('SELECT pg_advisory_unlock($1::bigint)', [lock]);
      const finished = await Promise.all(held.map((id) => client.waitForJob(id, { timeoutMs: 30_000 })));
      expect(finished.map((j) => [j.state, (j.result as { held: number }).held])).toEqual(held.map(() => ['succeeded', lock]));
      // The done notification can arrive before the thread's last batch reports back.
      const status = await eventually(
        () => (supervisor.status().inFlight === 0 ? supervisor.status() : null),
        'every slot to be free again',
      );
      expect(status).toMatchObject({ restarts: 0, counters: { claimErrors: 0, threadCrashes: 0 } });
    } finally {
      await locker.query('SELECT pg_advisory_unlock_all()').catch(() => {});
      locker.release();
      await supervisor.stop({ graceMs: 0 });
    }
  });
});
