import type pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../src/log.ts';
import type { TestQueue, TestSupervisorOptions } from '../supervisor/testing.ts';
import { eventually } from './helpers/db.ts';
import { RECORDED_TASKS, useTestQueue } from './helpers/queue.ts';

const TASKS = RECORDED_TASKS;
const fixture = useTestQueue();
let queue: TestQueue;
let pool: pg.Pool;
let s: string;
beforeAll(() => {
  ({ queue, pool, s } = fixture);
});

const TIMING: TestSupervisorOptions = {
  tasks: TASKS,
  // Far longer than any wait below: a job that comes back at all came back
  // because its thread died, not because its lease ran out.
  leaseMs: 60_000,
  heartbeatIntervalMs: 1_000,
  reaperIntervalMs: 1_000,
  sweepIntervalMs: 200,
  shutdownGraceMs: 0,
  logger: createLogger({ level: process.env.GRAPEVINE_TEST_LOG ?? 'silent' }),
};

async function jobRow(id: string) {
  const { rows } = await pool.query(`SELECT * FROM ${s}.jobs WHERE id = $1`, [id]);
  return rows[0];
}

async function createGate(name: string): Promise<{ table: string; open(): Promise<void> }> {
  const table = `${s}."gate_${name}"`;
  await pool.query(`CREATE TABLE ${table} (open boolean NOT NULL)`);
  await pool.query(`INSERT INTO ${table} VALUES (false)`);
  return { table, open: async () => void (await pool.query(`UPDATE ${table} SET open = true`)) };
}

async function transitions(id: string): Promise<string[]> {
  const { rows } = await pool.query(`SELECT state FROM ${s}.transitions WHERE job_id = $1 ORDER BY at`, [id]);
  return rows.map((r) => r.state);
}

describe('a poison job that kills every thread it runs on', () => {
  it('is parked as failed after exactly maxAttempts executions while 500 healthy jobs all succeed, and the pool is back to full size', async () => {
    const threads = 3;
    // A thread can die after its claim committed but before it told the
    // supervisor: such jobs come back when their lease runs out, so keep it short.
    const supervisor = await queue.startSupervisor({
      ...TIMING,
      threads,
      concurrency: 4,
      leaseMs: 2_000,
      heartbeatIntervalMs: 200,
      reaperIntervalMs: 200,
    });
    try {
      const healthy = (n: number) => Array.from({ length: n }, (_, i) => ({ task: 'recorded', payload: { n: i } }));
      // The poison job sits in the middle of the healthy ones, so it runs while they do.
      const ids = await queue.client.addJobs([...healthy(250), { task: 'poison', payload: {}, maxAttempts: 3 }, ...healthy(250)]);
      const poisonId = ids[250];

      const poison = await queue.client.waitForJob(poisonId, { timeoutMs: 60_000 });
      expect(poison).toMatchObject({ state: 'failed', attempts: 3, maxAttempts: 3, result: null });
      // Released by the dispatcher when the batch fails, or, if the thread
      // died before its claim was reported, by the dead-thread sweep.
      expect(poison.lastError).toMatch(/^thread crashed: .*exited with code: 1|^thread \d+ exited \(code 1\) after claiming this job/);
      await queue.waitUntilIdle({ timeoutMs: 60_000 });

      expect(await queue.states()).toEqual({ succeeded: 500, failed: 1 });
      const ledger = await queue.ledger();
      expect(ledger.filter((e) => e.jobId === poisonId).map((e) => e.attempt)).toEqual([1, 2, 3]);
      // Healthy jobs that shared a thread with the poison ran again; check()
      // accepts those re-runs only because each dying thread was recorded as a fault.
      const check = await queue.check();
      expect(check).toMatchObject({ ok: true, jobs: 501, unfinished: [], finishedTwice: [], unexplainedDuplicates: [] });

      // The pool never crash-loops: no more replacements than the poison killed threads.
      const status = await eventually(() => {
        const st = supervisor.status();
        return st.threads.length === threads ? st : null;
      }, 'the thread pool to be back to full size');
      expect(status.restarts).toBeGreaterThanOrEqual(1);
      expect(status.restarts).toBeLessThanOrEqual(3);
      const after = await queue.client.addJob('recorded', { n: -1 });
      expect(await queue.client.waitForJob(after, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', attempts: 1 });
    } finally {
      await supervisor.stop({ graceMs: 0 });
    }
  });
});

/**
 * Holds the job's row lock from a transaction of the test's own, so the
 * thread's outcome write (which updates that row) waits until release().
 */
async function lockJobRow(id: string) {
  const locker = await pool.connect();
  await locker.query('BEGIN');
  await locker.query(`SELECT 1 FROM ${s}.jobs WHERE id = $1 FOR UPDATE`, [id]);
  const { rows } = await locker.query('SELECT pg_backend_pid() AS pid');
  const lockerPid: number = rows[0].pid;
  return {
    /**
     * The backend of a grapevine thread whose outcome write waits for this
     * lock. (Other statements of the threads can show up in
     * pg_blocking_pids for a moment too, so the write is picked by its text.)
     */
    blockedOutcomeWrite: () =>
      eventually(async () => {
        const { rows } = await pool.query(
          `SELECT pid, query FROM pg_stat_activity
            WHERE $1 = ANY(pg_blocking_pids(pid)) AND application_name LIKE 'grapevine-thread-%'
              AND query LIKE '%jsonb_to_recordset%'`,
          [lockerPid],
        );
        return rows[0] as { pid: number; query: string } | undefined;
      }, 'the outcome write to wait for the row lock'),
    release: async () => {
      await locker.query('COMMIT');
      locker.release();
    },
  };
}

describe('a thread killed after its handler returned, before the outcome committed', () => {
  it("has its job run again, which succeeds once with the second attempt's result", async () => {
    const gate = await createGate('uncommitted');
    const supervisor = await queue.startSupervisor({ ...TIMING, threads: 2, concurrency: 2 });
    try {
      const id = await queue.client.addJob('recorded-block', { gate: gate.table }, { maxAttempts: 3 });
      const threadId = await eventually(
        () => supervisor.status().threads.find((t) => t.currentJobs.includes(id))?.threadId,
        'the job to run on a thread',
      );
      const lock = await lockJobRow(id);
      try {
        await gate.open();
        const write = await lock.blockedOutcomeWrite();
        expect(write.query).toMatch(/SET state = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled' ELSE 'succeeded' END/);

        await queue.recordFault('thread-killed', supervisor.id, threadId);
        expect(supervisor.killThread(threadId)).toBe(threadId);
        await eventually(() => !supervisor.status().threads.some((t) => t.threadId === threadId), 'the thread to be gone');
        // The thread's connection dies with it. PostgreSQL notices a vanished
        // client only when it next uses the socket, so the test ends that
        // backend itself; the other order is the next test.
        await pool.query('SELECT pg_terminate_backend($1)', [write.pid]);
        await eventually(
          async () => (await pool.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [write.pid])).rowCount === 0,
          "the dead thread's backend to end",
        );
      } finally {
        await lock.release();
      }

      const job = await queue.client.waitForJob(id, { timeoutMs: 30_000 });
      expect(job).toMatchObject({ state: 'succeeded', attempts: 2, result: { attempt: 2 } });
      expect(job.lastError).toMatch(/^thread crashed: /);
      expect((await queue.ledger()).filter((e) => e.jobId === id).map((e) => e.attempt)).toEqual([1, 2]);
      expect(await transitions(id)).toEqual(['succeeded']);
    } finally {
      await supervisor.stop({ graceMs: 0 });
    }
    const check = await queue.check();
    expect(check.unexplainedDuplicates).toEqual([]);
    expect(check.finishedTwice).toEqual([]);
  });

  it("lets the dead thread's outcome write, if it was already sent, race the release of its job: whichever commits first wins, the job succeeds once", async () => {
    const gate = await createGate('in_flight');
    const supervisor = await queue.startSupervisor({ ...TIMING, threads: 2, concurrency: 2 });
    try {
      const id = await queue.client.addJob('recorded-block', { gate: gate.table }, { maxAttempts: 3 });
      const threadId = await eventually(
        () => supervisor.status().threads.find((t) => t.currentJobs.includes(id))?.threadId,
        'the job to run on a thread',
      );
      const lock = await lockJobRow(id);
      try {
        await gate.open();
        await lock.blockedOutcomeWrite();
        await queue.recordFault('thread-killed', supervisor.id, threadId);
        expect(supervisor.killThread(threadId)).toBe(threadId);
        await eventually(() => !supervisor.status().threads.some((t) => t.threadId === threadId), 'the thread to be gone');
      } finally {
        // The dead thread's backend still waits with its write. It usually
        // commits first and the supervisor's release then finds the job
        // finished; if the release gets there first, the write is fenced and
        // the job runs again. Either way: one success, from the last attempt.
        await lock.release();
      }

      const job = await queue.client.waitForJob(id, { timeoutMs: 30_000 });
      await eventually(() => supervisor.status().inFlight === 0, 'the supervisor to let go of the job');
      const row = await jobRow(id);
      expect(row.state).toBe('succeeded');
      expect([1, 2]).toContain(row.attempts);
      expect(row.result).toEqual({ attempt: row.attempts, supervisorId: supervisor.id });
      expect(job.result).toEqual(row.result);
      expect((await queue.ledger()).filter((e) => e.jobId === id).map((e) => e.attempt)).toEqual(
        Array.from({ length: row.attempts }, (_, i) => i + 1),
      );
      expect(await transitions(id)).toEqual(['succeeded']);
    } finally {
      await supervisor.stop({ graceMs: 0 });
    }
  });
});
