import path from 'node:path';
import type pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { createControl } from '../supervisor/public.ts';
import type { SupervisorProcess, TestQueue, TestSupervisorOptions } from '../supervisor/testing.ts';
import { eventually } from './helpers/db.ts';
import { useTestQueue } from './helpers/queue.ts';

/**
 * Queue limits across a fleet (docs/limits.md): three supervisor processes
 * race for limited queues while threads are killed under them. Each
 * execution records its start and end (database clock) in flow_ledger; a
 * killed execution, which records no end, ends when its job leaves
 * 'running' (the release). From the ledger: the overlap per queue and per
 * group never exceeds its limit, serial groups run in order, and every job
 * runs. The rate is checked on the claims' start stamps, the times it
 * bounds. No assertion on how long anything took.
 */
const fixture = useTestQueue();
let queue: TestQueue;
let pool: pg.Pool;
let s: string;
beforeAll(async () => {
  ({ queue, pool, s } = fixture);
  await pool.query(`
    CREATE TABLE ${s}.flow_ledger (
      job_id bigint NOT NULL, attempt integer NOT NULL, queue text NOT NULL, group_key text,
      started timestamptz NOT NULL, ended timestamptz, PRIMARY KEY (job_id, attempt));
    CREATE TABLE ${s}.slots (job_id bigint NOT NULL, attempt integer NOT NULL, started timestamptz, left_at timestamptz);
    CREATE FUNCTION ${s}.record_slot() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.state = 'running' THEN
        INSERT INTO ${s}.slots (job_id, attempt, started) VALUES (NEW.id, NEW.attempts, NEW.started_at);
      ELSE
        UPDATE ${s}.slots SET left_at = clock_timestamp() WHERE job_id = OLD.id AND attempt = OLD.attempts;
      END IF;
      RETURN NULL;
    END $$;
    CREATE TRIGGER record_slot AFTER UPDATE OF state ON ${s}.jobs
      FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND 'running' IN (OLD.state, NEW.state))
      EXECUTE FUNCTION ${s}.record_slot();`);
});

const LIMIT_TASKS = path.resolve(import.meta.dirname, 'fixtures/limit-tasks');
const OPTIONS: TestSupervisorOptions = {
  tasks: LIMIT_TASKS,
  threads: 2,
  concurrency: 4,
  leaseMs: 3_000,
  heartbeatIntervalMs: 300,
  reaperIntervalMs: 300,
  sweepIntervalMs: 300,
  shutdownGraceMs: 0,
};

/** Executions with their end (a killed one's: its job left 'running'). */
const EXECUTIONS = (s: string) => `
  WITH e AS (
    SELECT l.job_id, l.attempt, l.queue, l.group_key, l.started,
           coalesce(l.ended, (SELECT x.left_at FROM ${s}.slots x WHERE x.job_id = l.job_id AND x.attempt = l.attempt)) AS ended
      FROM ${s}.flow_ledger l)`;

/** The most executions of one queue (and of one group, by_group) seen running at once. */
async function highestOverlap(queueName: string, byGroup: boolean): Promise<number> {
  const { rows } = await pool.query(
    `${EXECUTIONS(s)}
     SELECT coalesce(max((SELECT count(*) FROM e b
                           WHERE b.queue = a.queue AND (NOT $2 OR b.group_key IS NOT DISTINCT FROM a.group_key)
                             AND b.started <= a.started AND b.ended > a.started)), 0)::int AS n
       FROM e a WHERE a.queue = $1`,
    [queueName, byGroup],
  );
  return rows[0].n;
}

describe('limits across three supervisor processes with thread kills', () => {
  it('never overlap past a limit, run serial groups in order, hold the rate per window, and run every job', async () => {
    const control = createControl({ connectionString: queue.connectionString, schema: queue.schema });
    try {
      await control.setQueue('capped', { concurrency: 3 });
      await control.setQueue('serial', { groupConcurrency: 1 });
      await control.setQueue('paired', { groupConcurrency: 2, concurrency: 5 });
      await control.setQueue('rated', { rate: '4/1s' });
    } finally {
      await control.close();
    }
    const fleet: SupervisorProcess[] = [];
    for (let i = 0; i < 3; i++) fleet.push(await queue.spawnSupervisor(OPTIONS));

    const jobs = [
      ...Array.from({ length: 40 }, (_, n) => ({ task: 'limited', queue: 'capped', payload: { ms: 40, n } })),
      ...Array.from({ length: 48 }, (_, n) => ({ task: 'limited', queue: 'serial', group: `s${n % 8}`, payload: { ms: 15 } })),
      ...Array.from({ length: 30 }, (_, n) => ({ task: 'limited', queue: 'paired', group: `p${n % 3}`, payload: { ms: 30 } })),
      ...Array.from({ length: 10 }, () => ({ task: 'limited', queue: 'rated', payload: { ms: 5 } })),
    ];
    await queue.client.addJobs(jobs);

    // Kill a busy thread in each process while the queues drain.
    for (const proc of fleet) {
      await eventually(async () => {
        const { rows } = await pool.query(`SELECT count(*)::int AS n FROM ${s}.jobs WHERE state = 'running' AND locked_by = $1`, [proc.id]);
        return rows[0].n > 0 || (await queue.states()).pending === undefined;
      }, 'a job running in the process');
      proc.killThread();
    }
    await queue.waitUntilDone();

    const result = await queue.check();
    expect(result.unfinished).toEqual([]);
    expect(result.finishedTwice).toEqual([]);
    expect(result.unexplainedDuplicates).toEqual([]);
    expect(await queue.states()).toEqual({ succeeded: jobs.length });
    // Every job ran to its end once at least.
    const { rows: ended } = await pool.query(`SELECT count(DISTINCT job_id)::int AS n FROM ${s}.flow_ledger WHERE ended IS NOT NULL`);
    expect(ended[0].n).toBe(jobs.length);
    const { rows: open } = await pool.query(`${EXECUTIONS(s)} SELECT count(*)::int AS n FROM e WHERE ended IS NULL`);
    expect(open[0].n).toBe(0);

    expect(await highestOverlap('capped', false)).toBeLessThanOrEqual(3);
    expect(await highestOverlap('serial', true)).toBe(1);
    expect(await highestOverlap('paired', true)).toBeLessThanOrEqual(2);
    expect(await highestOverlap('paired', false)).toBeLessThanOrEqual(5);

    // Serial groups in order: each execution's job is the group's job of the
    // execution before it (a re-run after a kill) or a later one.
    const { rows: backwards } = await pool.query(
      `SELECT group_key, job_id, previous FROM (
         SELECT group_key, job_id, lag(job_id) OVER (PARTITION BY group_key ORDER BY started) AS previous
           FROM ${s}.flow_ledger WHERE queue = 'serial') o
        WHERE job_id < previous`,
    );
    expect(backwards).toEqual([]);

    // The rate: no 1 s window holds more than 4 starts (claim stamps, database clock).
    const { rows: rate } = await pool.query(
      `WITH st AS (SELECT x.started FROM ${s}.slots x JOIN ${s}.jobs j ON j.id = x.job_id WHERE j.queue = 'rated')
       SELECT max((SELECT count(*) FROM st b WHERE b.started >= a.started AND b.started < a.started + interval '1 second'))::int AS n,
              count(*)::int AS starts
         FROM st a`,
    );
    expect(rate[0].starts).toBeGreaterThanOrEqual(10);
    expect(rate[0].n).toBeLessThanOrEqual(4);
    // Each queue was driven to its limit at least once: the bound was tested, not merely idle.
    expect(await highestOverlap('capped', false)).toBe(3);
    for (const proc of fleet) expect(await proc.stop()).toBe(0);
  });
});
