import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createClient, type Supervisor } from '../supervisor/public.ts';
import { directDatabaseUrl, eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';
import { CLI, start } from './helpers/process.ts';

/**
 * helpers.progress(): stored throttled, fenced on the claim, announced only
 * while someone watches (waitForJob's onProgress, grapevine job --follow).
 * Runs in the pooled pass too: the writes and the watch go through PgBouncer.
 */
const db = useMigratedSchema('progress');
const S = db.s;
const GATE = `${S}.progress_gate`;
const INTERVAL_MS = 100;
let sup: Supervisor;
/** A LISTEN of the test's own on the progress channel: which job ids it heard. */
let heard: string[] = [];
let listener: pg.Client;

beforeAll(async () => {
  await db.pool.query(`CREATE TABLE ${GATE} (step int NOT NULL)`);
  await db.pool.query(`INSERT INTO ${GATE} VALUES (0)`);
  // Counts the statements that wrote a job's progress (the claim and the outcome leave it alone).
  await db.pool.query(`
    CREATE TABLE ${S}.progress_writes (job_id bigint, at timestamptz DEFAULT clock_timestamp());
    CREATE FUNCTION ${S}.count_progress_write() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.progress IS DISTINCT FROM OLD.progress THEN INSERT INTO ${S}.progress_writes (job_id) VALUES (NEW.id); END IF;
      RETURN NEW;
    END $$;
    CREATE TRIGGER count_progress_write AFTER UPDATE OF progress ON ${S}.jobs FOR EACH ROW EXECUTE FUNCTION ${S}.count_progress_write();`);
  listener = new pg.Client({ connectionString: directDatabaseUrl() });
  await listener.connect();
  listener.on('notification', (n) => heard.push(...String(n.payload).split(',')));
  await listener.query(`LISTEN "${db.schema}_progress"`);
  sup = await startTestSupervisor(db, { threads: 1, progressIntervalMs: INTERVAL_MS });
});
afterAll(async () => {
  await sup?.stop({ graceMs: 0 });
  await listener?.end();
});
beforeEach(async () => {
  heard = [];
  await db.pool.query(`UPDATE ${GATE} SET step = 0`);
});

/** What the test's listener heard, once everything notified before this call has arrived (notifications come in commit order). */
async function heardSoFar(): Promise<string[]> {
  const marker = `marker-${Date.now()}`;
  await db.pool.query(`SELECT pg_notify($1, $2)`, [`${db.schema}_progress`, marker]);
  await eventually(() => heard.includes(marker), 'the marker notification');
  return heard.filter((h) => h !== marker);
}

const openStep = (step: number) => db.pool.query(`UPDATE ${GATE} SET step = $1`, [step]);
const storedProgress = async (id: string) => (await db.pool.query(`SELECT progress FROM ${S}.jobs WHERE id = $1`, [id])).rows[0]?.progress;

describe('helpers.progress()', () => {
  it('unwatched: stores the latest value at most once per interval, the last one before the outcome, and announces nothing', async () => {
    const started = Date.now();
    const id = await db.client.addJob('progress', { burst: 300 });
    const job = await db.client.waitForJob(id);
    const elapsedMs = Date.now() - started;
    expect(job.state).toBe('succeeded');
    expect(job.progress).toBe(300);
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM ${S}.progress_writes WHERE job_id = $1`, [id]);
    // One write per interval at most, plus the last value's write before the outcome: far fewer than 300.
    expect(rows[0].n).toBeGreaterThanOrEqual(1);
    expect(rows[0].n).toBeLessThanOrEqual(Math.floor(elapsedMs / INTERVAL_MS) + 2);
    expect(await heardSoFar()).toEqual([]);
  });

  it('unwatched, jobs that each report once cost one progress UPDATE per interval at most, however many finish in it', async () => {
    // Writes of progress alone (the outcome's own write leaves the job running no more).
    await db.pool.query(`
      CREATE TABLE ${S}.progress_only (at timestamptz DEFAULT clock_timestamp());
      CREATE FUNCTION ${S}.count_progress_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF OLD.state = 'running' AND NEW.state = 'running' AND NEW.progress IS DISTINCT FROM OLD.progress THEN
          INSERT INTO ${S}.progress_only DEFAULT VALUES;
        END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER count_progress_only AFTER UPDATE OF progress ON ${S}.jobs FOR EACH ROW EXECUTE FUNCTION ${S}.count_progress_only();`);
    const started = Date.now();
    // One after another: each job's value is the thread's only one, and its outcome follows at once.
    for (let i = 0; i < 20; i++) {
      const job = await db.client.waitForJob(await db.client.addJob('progress', { last: i }));
      expect(job.progress).toBe(i);
    }
    const elapsedMs = Date.now() - started;
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM ${S}.progress_only`);
    expect(rows[0].n).toBeLessThanOrEqual(Math.floor(elapsedMs / INTERVAL_MS) + 1);
    await db.pool.query(`DROP TRIGGER count_progress_only ON ${S}.jobs`);
  });

  it("a failed job's last value is stored with its failure, and a null is a value too", async () => {
    const failed = await db.client.addJob('progress', { burst: 3, last: { at: 'the end', quote: '"\\' }, fail: true }, { maxAttempts: 1 });
    // 10 reported values, then a pause in which the throttle writes the 10th, then null.
    const nulled = await db.client.addJob('progress', { burst: 10, last: null });
    const [failedJob, nulledJob] = await Promise.all([db.client.waitForJob(failed), db.client.waitForJob(nulled)]);
    expect(failedJob).toMatchObject({ state: 'failed', progress: { at: 'the end', quote: '"\\' } });
    expect(failedJob.lastError).toMatch(/failed after reporting/);
    expect(nulledJob).toMatchObject({ state: 'succeeded', progress: null });
  });

  it('watched: hands each value to onProgress in order, pushed over LISTEN, the last one before the wait resolves', async () => {
    const id = await db.client.addJob('progress', { gate: GATE, steps: 3, last: 'done' });
    const seen: unknown[] = [];
    const job = await db.client.waitForJob(id, {
      onProgress: (value) => {
        seen.push(value);
        // Each step is let go only once the watcher saw it: no value is replaced unseen.
        if (typeof value === 'object' && value !== null) void openStep((value as { done: number }).done);
      },
    });
    expect(job.state).toBe('succeeded');
    expect(seen).toEqual([{ done: 1, total: 3 }, { done: 2, total: 3 }, { done: 3, total: 3 }, 'done']);
    expect(job.progress).toBe('done');
    expect(await heardSoFar()).toContain(id);
    const { rows } = await db.pool.query(`SELECT progress_watched_until > now() AS watched FROM ${S}.jobs WHERE id = $1`, [id]);
    expect(rows[0].watched).toBe(true);
  });

  it('a watcher that went away: once its mark lapses, values are stored but no longer announced', async () => {
    const id = await db.client.addJob('progress', { gate: GATE, steps: 2 });
    await eventually(async () => (await storedProgress(id))?.done === 1, 'the first step stored');
    // A watcher that gives up: its mark stays for a while (30 s), then lapses.
    await expect(db.client.waitForJob(id, { timeoutMs: 200, onProgress: () => {} })).rejects.toMatchObject({
      code: 'GRAPEVINE_WAIT_TIMEOUT',
    });
    const marked = await db.pool.query(`SELECT progress_watched_until > now() AS watched FROM ${S}.jobs WHERE id = $1`, [id]);
    expect(marked.rows[0].watched).toBe(true);
    // As 30 s later.
    await db.pool.query(`UPDATE ${S}.jobs SET progress_watched_until = now() - interval '1 second' WHERE id = $1`, [id]);
    await heardSoFar();
    heard = [];
    await openStep(2);
    const job = await db.client.waitForJob(id);
    expect(job.progress).toEqual({ done: 2, total: 2 });
    expect(await heardSoFar()).toEqual([]);
  });

  it('is fenced on the claim: a run that lost its claim stores nothing', async () => {
    const id = await db.client.addJob('progress', { gate: GATE, steps: 1, last: 'after the claim was lost' });
    await eventually(async () => (await storedProgress(id))?.done === 1, 'the first step stored');
    const fencedBefore = sup.status().counters.fenced;
    // As if the reaper had given the job to another run.
    await db.pool.query(`UPDATE ${S}.jobs SET claim_token = claim_token + 1000000 WHERE id = $1`, [id]);
    await openStep(1);
    // The outcome is fenced too; the last progress was written (and turned away) before it.
    await eventually(() => sup.status().counters.fenced > fencedBefore, 'the outcome fenced');
    expect(await storedProgress(id)).toEqual({ done: 1, total: 1 });
    await db.pool.query(`UPDATE ${S}.jobs SET state = 'cancelled', finished_at = now() WHERE id = $1`, [id]);
  });

  it('a value reported after the handler returned does not hold up its outcome, nor replace the last value', async () => {
    // The handler returns at once, leaving a timer that reports a value every millisecond for 3 s.
    const id = await db.client.addJob('progress', { last: 'returned', leakMs: 3_000 });
    const job = await db.client.waitForJob(id);
    expect(job.state).toBe('succeeded');
    expect(job.progress).toBe('returned');
    // Nor after it ended (a leaked value would be turned away by the state, but is not even sent).
    expect(await storedProgress(id)).toBe('returned');
  });

  it('what onProgress throws ends the wait, also for a value the periodic renewal of the mark found', async () => {
    // The client's LISTEN connection is up (its first connect wakes every wait).
    await db.client.waitForJob(await db.client.addJob('progress', {}));
    const id = await db.client.addJob('progress', { gate: GATE, steps: 1 });
    await eventually(async () => (await storedProgress(id))?.done === 1, 'the first step stored');
    const seen: unknown[] = [];
    const wait = db.client.waitForJob(id, {
      timeoutMs: 60_000,
      onProgress: (value) => {
        seen.push(value);
        if (value === 'boom') throw new Error('onProgress refused boom');
      },
    });
    wait.catch(() => {});
    await eventually(() => seen.length === 1, 'the value the job had');
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on('unhandledRejection', onRejection);
    try {
      // Written with no notification: only the renewal (every 10 s) reads it.
      await db.pool.query(`UPDATE ${S}.jobs SET progress = '"boom"' WHERE id = $1`, [id]);
      await expect(wait).rejects.toThrow('onProgress refused boom');
      expect(rejections).toEqual([]);
    } finally {
      process.off('unhandledRejection', onRejection);
      await openStep(1);
      await db.client.waitForJob(id);
    }
  }, 30_000);

  it('refuses a value that is not JSON or too large, failing the handler with GRAPEVINE_PROGRESS_INVALID', async () => {
    const big = await db.client.addJob('progress', { invalid: 'big' }, { maxAttempts: 1 });
    const fn = await db.client.addJob('progress', { invalid: 'function' }, { maxAttempts: 1 });
    const [bigJob, fnJob] = await Promise.all([db.client.waitForJob(big), db.client.waitForJob(fn)]);
    expect(bigJob.state).toBe('failed');
    expect(bigJob.lastError).toMatch(/GRAPEVINE_PROGRESS_INVALID.*over the 4096-byte limit/);
    expect(fnJob.lastError).toMatch(/GRAPEVINE_PROGRESS_INVALID.*not JSON \(got function\)/);
    expect(bigJob.progress).toBeNull();
  });

  it('refuses a Map or Set (which JSON would store as {}), anywhere in the value, naming the type', async () => {
    const ids = await db.client.addJobs(
      ['map', 'nested-set', 'empty'].map((invalid) => ({ task: 'progress', payload: { invalid }, maxAttempts: 1 })),
    );
    const [map, set, empty] = await Promise.all(ids.map((id) => db.client.waitForJob(id)));
    expect(map).toMatchObject({ state: 'failed', progress: null });
    expect(map.lastError).toMatch(/GRAPEVINE_PROGRESS_INVALID\]: progress holds a Map, which JSON stores as \{\}/);
    expect(set).toMatchObject({ state: 'failed', progress: null });
    expect(set.lastError).toMatch(/GRAPEVINE_PROGRESS_INVALID\]: progress holds a Set \(at "seen"\), which JSON stores as \{\}/);
    expect(empty).toMatchObject({ state: 'succeeded', progress: { step: {}, map: { a: 1 } } });
  });

  it('grapevine job ID --follow prints each value, then the job', async () => {
    const id = await db.client.addJob('progress', { gate: GATE, steps: 2 });
    const follow = start([CLI, 'job', id, '--follow', '--schema', db.schema], { DATABASE_URL: db.url });
    await follow.waitFor(/"done":1/);
    await openStep(1);
    await follow.waitFor(/"done":2/);
    await openStep(2);
    const done = await follow.exited;
    expect(done.code).toBe(0);
    const lines = done.stdout.split('\n');
    expect(lines.slice(0, 2).map((line) => JSON.parse(line))).toEqual([
      { id, progress: { done: 1, total: 2 } },
      { id, progress: { done: 2, total: 2 } },
    ]);
    expect(JSON.parse(lines.slice(2).join('\n'))).toMatchObject({ id, state: 'succeeded', progress: { done: 2, total: 2 } });
  });
});

describe('a client without onProgress', () => {
  it('never marks the progress as watched', async () => {
    const client = createClient({ connectionString: db.url, schema: db.schema });
    try {
      const id = await client.addJob('progress', { burst: 20 });
      await client.waitForJob(id);
      const { rows } = await db.pool.query(`SELECT progress_watched_until FROM ${S}.jobs WHERE id = $1`, [id]);
      expect(rows[0].progress_watched_until).toBeNull();
    } finally {
      await client.close();
    }
  });
});
