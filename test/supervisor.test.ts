import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { PermanentError, VERSION, type Supervisor, type SupervisorOptions } from '../supervisor/public.ts';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';
import { useOwnRole } from './helpers/role.ts';

const db = useMigratedSchema('supervisor');
const role = useOwnRole(db, 'supervisor');
const { client, s: S } = db;

const started = new Set<Supervisor>();

/** A supervisor on this file's schema with short timers, stopped after the test. */
async function start(options: Partial<SupervisorOptions> = {}): Promise<Supervisor> {
  const supervisor = await startTestSupervisor(db, {
    threads: 2,
    concurrency: 4,
    leaseMs: 2_000,
    heartbeatIntervalMs: 200,
    reaperIntervalMs: 200,
    sweepIntervalMs: 200,
    killGraceMs: 200,
    ...options,
  });
  started.add(supervisor);
  return supervisor;
}

afterEach(async () => {
  await Promise.all([...started].map((s) => s.stop({ graceMs: 0 })));
  started.clear();
  // Each test starts from an empty table, so no supervisor picks up another test's leftovers.
  await db.pool.query(`DELETE FROM ${S}.jobs`);
});

interface JobRow {
  id: string;
  task: string;
  state: string;
  attempts: number;
  result: unknown;
  locked_by: string | null;
  last_error: string | null;
  started_at: Date | null;
  finished_at: Date | null;
  run_at: Date;
  due_later: boolean;
}

async function rowsOf(ids: string[]): Promise<JobRow[]> {
  const { rows } = await db.pool.query<JobRow>(
    `SELECT id::text, task, state, attempts, result, locked_by, last_error, started_at, finished_at, run_at,
            run_at > now() AS due_later
       FROM ${S}.jobs WHERE id = ANY($1::bigint[]) ORDER BY id`,
    [ids],
  );
  return rows;
}

async function rowOf(id: string): Promise<JobRow> {
  return (await rowsOf([id]))[0];
}

async function statesOf(ids: string[]): Promise<Record<string, number>> {
  const { rows } = await db.pool.query(`SELECT state, count(*)::int AS n FROM ${S}.jobs WHERE id = ANY($1::bigint[]) GROUP BY state`, [
    ids,
  ]);
  return Object.fromEntries(rows.map((r) => [r.state, r.n]));
}

async function allInState(ids: string[], state: string): Promise<boolean> {
  return (await statesOf(ids))[state] === ids.length;
}

/** A table the `block` task polls: its jobs run until the test opens it. */
async function createGate(name: string): Promise<{ ref: string; open(): Promise<void> }> {
  const ref = `${S}."gate_${name}"`;
  await db.pool.query(`CREATE TABLE ${ref} (open boolean NOT NULL)`);
  await db.pool.query(`INSERT INTO ${ref} VALUES (false)`);
  return { ref, open: async () => void (await db.pool.query(`UPDATE ${ref} SET open = true`)) };
}

/** Inserts a due job with the insert trigger switched off for this one transaction: no notification at all. */
async function insertWithoutNotification(task: string, payload: unknown = {}, queue = 'default'): Promise<string> {
  const c = await db.pool.connect();
  try {
    await c.query('BEGIN');
    await c.query('SET LOCAL session_replication_role = replica');
    const { rows } = await c.query(`INSERT INTO ${S}.jobs (task, payload, queue) VALUES ($1, $2, $3) RETURNING id::text`, [
      task,
      JSON.stringify(payload),
      queue,
    ]);
    await c.query('COMMIT');
    return rows[0].id;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    c.release();
  }
}

/**
 * Waits until the supervisor has swept the table at least once more: a job
 * nobody was told about is only ever found by a sweep.
 */
async function afterASweep({
  task = 'noop',
  payload = {},
  queue = 'default',
}: {
  task?: string;
  payload?: unknown;
  queue?: string;
} = {}): Promise<void> {
  const marker = await insertWithoutNotification(task, payload, queue);
  await eventually(async () => (await rowOf(marker)).state === 'succeeded', 'the sweep to find an unannounced job');
}

describe('running jobs', () => {
  it('runs jobs end to end and stores their JSON result, finished_at and the supervisor that ran them', async () => {
    const supervisor = await start();
    const ids = await client.addJobs([1, 4, 9, 16, 25].map((n) => ({ task: 'square', payload: { n } })));
    const { rows } = await db.pool.query(`SELECT ${S}.add_job('noop')::text AS id`);
    ids.push(rows[0].id);

    await eventually(() => allInState(ids, 'succeeded'), 'all jobs to succeed');
    const jobs = await rowsOf(ids);
    for (const job of jobs) {
      expect(job.locked_by).toBe(supervisor.id);
      expect(job.attempts).toBe(1);
      expect(job.finished_at).toBeInstanceOf(Date);
      expect(job.started_at!.getTime()).toBeLessThanOrEqual(job.finished_at!.getTime());
      expect(job.last_error).toBeNull();
    }
    expect(jobs.slice(0, 5).map((j) => j.result)).toEqual(
      [1, 4, 9, 16, 25].map((n) => ({ n, root: Math.sqrt(n), threadId: expect.any(Number) })),
    );
    expect(jobs[5].result).toBeNull();
    // The client reads the same record.
    expect(await client.getJob(ids[2])).toMatchObject({ state: 'succeeded', result: { n: 9, root: 3 }, lockedBy: supervisor.id });
  });

  it('holds exactly one LISTEN connection per supervisor, apart from its pools, however much work runs', async () => {
    // Connecting as a role of this file's own tells our connections apart from other files' supervisors.
    const a = await start({ connectionString: role.url, listenUrl: role.url });
    const b = await start({ connectionString: role.url, listenUrl: role.url });
    const ids = await client.addJobs(Array.from({ length: 60 }, (_, n) => ({ task: 'square', payload: { n } })));
    await eventually(() => allInState(ids, 'succeeded'), 'all jobs to succeed');

    const { rows } = await db.pool.query<{ pid: number; application_name: string; query: string }>(
      'SELECT pid, application_name, query FROM pg_stat_activity WHERE usename = $1',
      [role.name],
    );
    const listeners = rows.filter((r) => r.application_name === 'grapevine-listener');
    expect(listeners.map((r) => r.pid).sort()).toEqual([a.listenerPid(), b.listenerPid()].sort());
    // The last statement on a listener is its LISTEN, the look at its server process that follows, or the health check that confirms both.
    for (const listener of listeners)
      expect(listener.query).toMatch(/^LISTEN "|pg_listening_channels\(\)|^SELECT pg_backend_pid\(\) AS pid$/);
    // Every other connection belongs to a pool, and none of them listens.
    const others = rows.filter((r) => r.application_name !== 'grapevine-listener');
    expect(others.length).toBeGreaterThan(0);
    for (const other of others) {
      expect(other.application_name).toMatch(/^grapevine-(supervisor|migrate|thread-\d+|handler-\d+)$/);
      expect(other.query).not.toMatch(/^LISTEN/i);
    }
    // Both supervisors took part, each through its own listener.
    const owners = new Set((await rowsOf(ids)).map((j) => j.locked_by));
    expect([...owners].every((o) => o === a.id || o === b.id)).toBe(true);
  });

  it('never holds more than threads x concurrency jobs; the rest stay pending and are picked up from the table later', async () => {
    const gate = await createGate('backpressure');
    const supervisor = await start({ threads: 2, concurrency: 2 });
    const ids = await client.addJobs(Array.from({ length: 50 }, (_, i) => ({ task: 'block', payload: { gate: gate.ref, i } })));

    await eventually(async () => (await statesOf(ids)).running === 4, 'four jobs to be running');
    for (let check = 0; check < 25; check++) {
      const states = await statesOf(ids);
      expect(states.running ?? 0).toBeLessThanOrEqual(4);
      expect((states.running ?? 0) + (states.pending ?? 0)).toBe(50);
      expect(supervisor.status().inFlight).toBeLessThanOrEqual(4);
      await new Promise((r) => setTimeout(r, 40));
    }
    // The notification named all 50 ids; those that did not fit were not kept in memory.
    expect(supervisor.status().counters.overflowIds).toBeGreaterThanOrEqual(46);

    await gate.open();
    await eventually(() => allInState(ids, 'succeeded'), 'all 50 jobs to succeed');
    for (const job of await rowsOf(ids)) {
      expect(job.attempts).toBe(1);
      expect(job.locked_by).toBe(supervisor.id);
      expect(job.result).toEqual({ released: true });
    }
  });

  it('claims ahead of its handlers while they are quick, yet never runs more than concurrency handlers in a thread at once', async () => {
    await start({ threads: 1, concurrency: 4 });
    // Quick handlers let a thread hold up to twice its concurrency (claim-limit.ts):
    // waves until one claim has taken more jobs than the concurrency.
    const all: string[] = [];
    let largestClaim = 0;
    for (let wave = 0; wave < 20 && largestClaim <= 4; wave++) {
      const ids = await client.addJobs(Array.from({ length: 200 }, () => ({ task: 'count-running', payload: {} })));
      all.push(...ids);
      await eventually(() => allInState(ids, 'succeeded'), 'the wave to succeed');
      const { rows } = await db.pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM ${S}.jobs WHERE id = ANY($1::bigint[]) GROUP BY claim_token ORDER BY n DESC LIMIT 1`,
        [ids],
      );
      largestClaim = rows[0].n;
    }
    expect(largestClaim).toBeGreaterThan(4);
    for (const job of await rowsOf(all)) expect((job.result as { atStart: number }).atStart).toBeLessThanOrEqual(4);
  });

  it('leaves a job whose task no live supervisor knows pending and untouched, while known tasks run', async () => {
    await start();
    const [orphan, ...known] = await client.addJobs([
      { task: 'nobody_knows_this_task', payload: {} },
      { task: 'square', payload: { n: 4 } },
      { task: 'noop', payload: {} },
    ]);
    await eventually(() => allInState(known, 'succeeded'), 'known tasks to succeed');
    await afterASweep();
    const job = await client.getJob(orphan);
    expect(job).toMatchObject({ state: 'pending', attempts: 0, lockedBy: null, startedAt: null, task: 'nobody_knows_this_task' });
  });

  it('claims nothing once paused, even when paused the moment it has started with jobs waiting', async () => {
    const ids = await Promise.all([1, 2, 3].map(() => client.addJob('noop', {})));
    const supervisor = await start();
    supervisor.pause();
    // The start-up pull was taken but not yet sent: pausing gives it back.
    expect(supervisor.status().inFlight).toBe(0);
    await new Promise((r) => setTimeout(r, 300));
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM ${S}.jobs WHERE state = 'pending'`);
    expect(rows[0].n).toBe(3);
    supervisor.resume();
    for (const id of ids) expect(await client.waitForJob(id, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', attempts: 1 });
  });

  it('takes jobs only from the queues it was given', async () => {
    const supervisor = await start({ queues: ['fast', 'urgent'] });
    const ids = await client.addJobs([
      { task: 'square', payload: { n: 1 }, queue: 'fast' },
      { task: 'square', payload: { n: 2 }, queue: 'slow' },
      { task: 'square', payload: { n: 3 }, queue: 'urgent' },
      { task: 'square', payload: { n: 4 } },
    ]);
    const [fast, slow, urgent, byDefault] = ids;
    await eventually(() => allInState([fast, urgent], 'succeeded'), 'jobs of its queues to succeed');
    await afterASweep({ queue: 'fast' });
    expect(await statesOf([slow, byDefault])).toEqual({ pending: 2 });
    expect((await rowOf(fast)).locked_by).toBe(supervisor.id);
  });

  it('runs a delayed job once it is due, and not before', async () => {
    await start();
    const soon = await client.addJob('square', { n: 49 }, { runAt: new Date(Date.now() + 300) });
    const later = await client.addJob('square', { n: 64 }, { runAt: new Date(Date.now() + 3_600_000) });
    await eventually(async () => (await rowOf(soon)).state === 'succeeded', 'the delayed job to run');
    const job = await rowOf(soon);
    expect(job.result).toMatchObject({ n: 49, root: 7 });
    // Both timestamps come from the database clock.
    expect(job.started_at!.getTime()).toBeGreaterThanOrEqual(job.run_at.getTime());
    expect(await rowOf(later)).toMatchObject({ state: 'pending', attempts: 0, due_later: true });
  });
});

describe('failures', () => {
  it('puts a failed job back to pending with a later run_at, its attempt counted and the error message and stack kept', async () => {
    await start({ retryBaseMs: 60_000 });
    const id = await client.addJob('fail', { message: 'boom: the handler broke' }, { maxAttempts: 3 });
    await eventually(async () => {
      const job = await rowOf(id);
      return job.state === 'pending' && job.attempts === 1;
    }, 'the first attempt to fail');
    const job = await rowOf(id);
    expect(job.due_later).toBe(true);
    expect(job.finished_at).toBeNull();
    expect(job.last_error).toMatch(/^Error: boom: the handler broke\n/);
    // A stack frame pointing into the task module.
    expect(job.last_error).toMatch(/\n\s+at .*fail\.mjs:\d+/);
  });

  it('fails a job for good at max_attempts, with finished_at', async () => {
    const supervisor = await start({ retryBaseMs: 60_000 });
    const id = await client.addJob('fail', { message: 'still broken' }, { maxAttempts: 2 });
    await eventually(async () => {
      const job = await rowOf(id);
      return job.state === 'pending' && job.attempts === 1;
    }, 'the first attempt to fail');
    // Skip the retry delay: the retry notification makes the supervisor claim it again.
    expect(await client.runDueNow([id])).toBe(1);
    await eventually(async () => (await rowOf(id)).state === 'failed', 'the job to fail for good');
    const job = await rowOf(id);
    expect(job.attempts).toBe(2);
    expect(job.finished_at).toBeInstanceOf(Date);
    expect(job.last_error).toMatch(/^Error: still broken\n/);
    expect(job.locked_by).toBe(supervisor.id);
  });

  it('fails a job that throws PermanentError at once, without retrying', async () => {
    expect(new PermanentError('x').retryable).toBe(false);
    await start({ retryBaseMs: 50 });
    const id = await client.addJob('permanent', { message: 'the input can never work' }, { maxAttempts: 5 });
    await eventually(async () => (await rowOf(id)).state === 'failed', 'the job to fail');
    await afterASweep();
    const job = await rowOf(id);
    expect(job).toMatchObject({ state: 'failed', attempts: 1 });
    expect(job.finished_at).toBeInstanceOf(Date);
    expect(job.last_error).toMatch(/^PermanentError: the input can never work\n\s+at /);
  });
});

describe('registration', () => {
  it('registers itself with id, host, pid, version, threads and start time, and keeps its heartbeat moving', async () => {
    const supervisor = await start({ threads: 2, concurrency: 3 });
    const read = async () => (await db.pool.query(`SELECT * FROM ${S}.supervisors WHERE id = $1`, [supervisor.id])).rows[0];
    const first = await read();
    expect(first).toMatchObject({
      id: supervisor.id,
      host: os.hostname(),
      pid: process.pid,
      version: VERSION,
      threads: 2,
      concurrency: 3,
      queues: null,
    });
    expect(first.status).toMatch(/^(IDLE|BUSY)$/);
    expect(first.started_at).toBeInstanceOf(Date);
    expect(first.tasks).toEqual(expect.arrayContaining(['square', 'noop', 'block', 'ledger', 'fail']));
    await eventually(async () => (await read()).heartbeat_at.getTime() > first.heartbeat_at.getTime(), 'the heartbeat to advance');
    const later = await read();
    expect(later.started_at).toEqual(first.started_at);
    expect(later.stopped_at).toBeNull();
  });
});

describe('idle timeout given at start', () => {
  it('stops the supervisor once no job has run for that long, and only then', async () => {
    // Due before the start, so the supervisor has work from its first moment:
    // the clock only runs once that job has ended.
    const id = await client.addJob('square', { n: 4 });
    const supervisor = await start({ threads: 1, idleTimeoutMs: 300 });
    expect(await client.waitForJob(id)).toMatchObject({ state: 'succeeded' });
    await supervisor.stopped;
    const { rows } = await db.pool.query(`SELECT status FROM ${S}.supervisors WHERE id = $1`, [supervisor.id]);
    expect(rows[0].status).toBe('EXITED');
    const { rows: log } = await db.pool.query(`SELECT event, detail FROM ${S}.worker_log WHERE worker = $1 ORDER BY id`, [supervisor.id]);
    expect(log.map((e) => e.event)).toEqual(expect.arrayContaining(['TASK_START', 'TASK_COMPLETE', 'TIMEOUT', 'STOP']));
    expect(log.findIndex((e) => e.event === 'TIMEOUT')).toBeGreaterThan(log.findIndex((e) => e.event === 'TASK_COMPLETE'));
    expect(log.find((e) => e.event === 'STOP').detail).toMatch(/idle timeout/);
  });

  it('refuses a negative or fractional idleTimeoutMs, naming the option', async () => {
    for (const idleTimeoutMs of [-1, 1.5]) {
      const err = await start({ idleTimeoutMs }).catch((e: unknown) => e);
      expect(err).toMatchObject({
        code: 'GRAPEVINE_CONFIG_INVALID',
        message: expect.stringMatching(/idleTimeoutMs must be an integer from 0/),
      });
    }
  });
});

describe('missed notifications', () => {
  it('finds a job inserted without any notification on its sweep', async () => {
    await start();
    const listener = new pg.Client({ connectionString: db.url });
    await listener.connect();
    const heard: string[] = [];
    listener.on('notification', (m) => {
      if (m.channel === `${db.schema}_jobs`) heard.push(m.payload ?? '');
    });
    await listener.query(`LISTEN "${db.schema}_jobs"`);
    try {
      const id = await insertWithoutNotification('square', { n: 81 });
      await eventually(async () => (await rowOf(id)).state === 'succeeded', 'the sweep to run the job');
      expect((await rowOf(id)).result).toMatchObject({ n: 81, root: 9 });
      // Nobody ever announced it.
      await listener.query('SELECT 1');
      expect(heard).toEqual([]);
    } finally {
      await listener.end();
    }
  });

  it('finds a job made due by a plain UPDATE of run_at, which notifies nobody', async () => {
    await start();
    const id = await client.addJob('square', { n: 100 }, { runAt: new Date(Date.now() + 3_600_000) });
    await db.pool.query(`UPDATE ${S}.jobs SET run_at = now() WHERE id = $1`, [id]);
    await eventually(async () => (await rowOf(id)).state === 'succeeded', 'the sweep to run the job');
    expect((await rowOf(id)).result).toMatchObject({ n: 100, root: 10 });
  });
});

describe('task modules', () => {
  it('loads default exports from a directory of .mjs, .js and .ts files, named after the files', async () => {
    const supervisor = await start({ tasks: path.resolve(import.meta.dirname, 'fixtures/module-kinds') });
    expect([...supervisor.tasks].sort()).toEqual(['esm_module', 'plain_js', 'typescript']);
    const ids = await client.addJobs(['esm_module', 'plain_js', 'typescript'].map((task, n) => ({ task, payload: { n } })));
    await eventually(() => allInState(ids, 'succeeded'), 'one job per module to succeed');
    expect((await rowsOf(ids)).map((j) => j.result)).toEqual([
      { kind: 'mjs', n: 0 },
      { kind: 'js', n: 1 },
      { kind: 'ts', n: 2 },
    ]);
  });

  it('loads the named function exports of one module as tasks, both declared functions and arrow constants', async () => {
    const supervisor = await start({ tasks: path.resolve(import.meta.dirname, 'fixtures/named-exports.ts') });
    // The default export and non-function exports are not tasks.
    expect([...supervisor.tasks].sort()).toEqual(['arrow', 'declared']);
    const ids = await client.addJobs([
      { task: 'declared', payload: { n: 1 } },
      { task: 'arrow', payload: { n: 2 } },
      { task: 'notATask', payload: {} },
      { task: 'default', payload: {} },
    ]);
    await eventually(() => allInState(ids.slice(0, 2), 'succeeded'), 'both handlers to run');
    expect((await rowsOf(ids.slice(0, 2))).map((j) => j.result)).toEqual([
      { form: 'function declaration', n: 1 },
      { form: 'arrow function', n: 2 },
    ]);
    await afterASweep({ task: 'declared', payload: { n: 0 } });
    expect(await statesOf(ids.slice(2))).toEqual({ pending: 2 });
  });
});

describe('handler helpers', () => {
  it('gives handlers their job, a job-bound logger, a live signal, query() on the thread pool and addJob() for follow-ups', async () => {
    const supervisor = await start();
    const id = await client.addJob(
      'report_helpers',
      { followUp: { task: 'square', payload: { n: 144 } } },
      { queue: 'reports', maxAttempts: 4 },
    );
    await eventually(async () => (await rowOf(id)).state === 'succeeded', 'the reporting job to succeed');
    const report = (await rowOf(id)).result as {
      job: unknown;
      loggerBindings: Record<string, unknown>;
      signal: unknown;
      queryApplicationName: string;
      followUp: string;
    };
    expect(report.job).toEqual({ id, task: 'report_helpers', queue: 'reports', attempt: 1, maxAttempts: 4, scheduledFor: null });
    expect(report.loggerBindings).toMatchObject({ supervisor: supervisor.id, jobId: id, task: 'report_helpers', attempt: 1 });
    expect(report.signal).toEqual({ isAbortSignal: true, aborted: false });
    // Handler queries go through the thread's own handler pool, not the claim pool.
    expect(report.queryApplicationName).toMatch(/^grapevine-handler-\d+$/);

    expect(report.followUp).toMatch(/^\d+$/);
    await eventually(async () => (await rowOf(report.followUp)).state === 'succeeded', 'the follow-up job to succeed');
    expect((await rowOf(report.followUp)).result).toMatchObject({ n: 144, root: 12 });
  });
});
