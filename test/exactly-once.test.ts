import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { SupervisorOptions } from '../supervisor/public.ts';
import pg from 'pg';
import { directDatabaseUrl, eventually, FIXTURE_TASKS, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';
import { start as startProcess, type Running } from './helpers/process.ts';

const db = useMigratedSchema('exactly_once');
const { client, s } = db;

const SUPERVISOR_PROCESS = path.resolve(import.meta.dirname, 'fixtures/supervisor-process.ts');

/** The tables the exactly-once fixture writes: its rows, its "I am inside" marks, its errors, and a gate per attempt. */
async function createTables(name: string) {
  const table = `${s}."eo_${name}"`;
  const gate = `${s}."eo_${name}_gate"`;
  await db.pool.query(`
    CREATE TABLE ${table} (job_id bigint NOT NULL, attempt integer NOT NULL);
    CREATE TABLE ${s}."eo_${name}_inside" (job_id bigint NOT NULL, attempt integer NOT NULL);
    CREATE TABLE ${s}."eo_${name}_errors" (job_id bigint NOT NULL, attempt integer NOT NULL, code text, message text);
    CREATE TABLE ${gate} (attempt integer NOT NULL, open boolean NOT NULL DEFAULT true)`);
  // The fixture appends _inside and _errors to the quoted name: it takes the table unquoted.
  const bare = `${s}.eo_${name}`;
  const rows = async (suffix = '') => (await db.pool.query(`SELECT * FROM ${s}."eo_${name}${suffix}" ORDER BY job_id, attempt`)).rows;
  return {
    payload: { table: bare, gate },
    writes: () => rows(),
    inside: () => rows('_inside'),
    errors: () => rows('_errors'),
    open: async (attempt: number) => void (await db.pool.query(`INSERT INTO ${gate} (attempt) VALUES ($1)`, [attempt])),
  };
}

async function jobRow(id: string) {
  const { rows } = await db.pool.query(`SELECT * FROM ${s}.jobs WHERE id = $1`, [id]);
  return rows[0];
}

describe('an exactly-once transaction', () => {
  it('commits the handler writes, its follow-up job and the job success together, and the outcome writer writes nothing after it', async () => {
    const t = await createTables('normal');
    // Progress values after the first wait a minute, unless something writes them sooner.
    const supervisor = await startTestSupervisor(db, { threads: 1, concurrency: 2, shutdownGraceMs: 0, progressIntervalMs: 60_000 });
    try {
      const payload = { table: t.payload.table, followUp: true, progress: { step: 'last' } };
      const id = await client.addJob('exactly-once', payload, { maxAttempts: 1 });
      const done = await client.waitForJob(id, { timeoutMs: 30_000 });
      // The transaction's value, not what the handler returned after it.
      expect(done).toMatchObject({ state: 'succeeded', attempts: 1, result: { attempt: 1, by: 'transaction' } });
      expect(await t.writes()).toEqual([{ job_id: id, attempt: 1 }]);
      expect((await jobRow(id)).progress).toEqual({ step: 'last' });
      const { rows: followUps } = await db.pool.query(
        `SELECT id::text AS id FROM ${s}.jobs WHERE task = 'noop' AND payload->>'after' = $1`,
        [id],
      );
      expect(followUps).toHaveLength(1);
      expect(await client.waitForJob(followUps[0].id, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded' });
      // Had the thread written the success again, the fence would have turned it away and counted it.
      expect(supervisor.status().counters.fenced).toBe(0);
      expect(await t.errors()).toEqual([]);

      // A misspelt option would quietly give a plain transaction: it is refused instead.
      const misspelt = await client.addJob('exactly-once', { table: t.payload.table, options: { exactlyonce: true } }, { maxAttempts: 1 });
      expect(await client.waitForJob(misspelt, { timeoutMs: 30_000 })).toMatchObject({ state: 'failed' });
      const [refused] = await t.errors();
      expect(refused).toMatchObject({ job_id: misspelt, code: 'GRAPEVINE_CONFIG_INVALID' });
      expect(refused.message).toMatch(/unknown option "exactlyonce"; the only option is \{ exactlyOnce: true \| false \}/);
      expect(await t.writes()).toEqual([{ job_id: id, attempt: 1 }]);
    } finally {
      await supervisor.stop({ graceMs: 0 });
    }
  });

  it('keeps the committed success when the thread dies right after the commit, before it reports anything', async () => {
    const t = await createTables('crash');
    const supervisor = await startTestSupervisor(db, { threads: 1, concurrency: 1, shutdownGraceMs: 0 });
    try {
      const id = await client.addJob('exactly-once', { table: t.payload.table, exitAfter: true }, { maxAttempts: 3 });
      await eventually(() => supervisor.status().counters.threadCrashes === 1, 'the thread to die after the commit');
      // The crash's release comes before the next claim: once a later job has run, it has happened.
      const next = await client.addJob('noop', {});
      expect(await client.waitForJob(next, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded' });
      expect(await jobRow(id)).toMatchObject({ state: 'succeeded', attempts: 1, result: { attempt: 1, by: 'transaction' } });
      expect(await t.writes()).toEqual([{ job_id: id, attempt: 1 }]);
    } finally {
      await supervisor.stop({ graceMs: 0 });
    }
  });

  it('deletes the job it finished under deleteSucceeded, with its writes committed', async () => {
    const t = await createTables('deleted');
    const supervisor = await startTestSupervisor(db, { threads: 1, concurrency: 2, shutdownGraceMs: 0, deleteSucceeded: true });
    try {
      // Nobody waits for it, so its success deletes it.
      const id = await client.addJob('exactly-once', { table: t.payload.table }, { maxAttempts: 1 });
      await eventually(async () => (await jobRow(id)) === undefined, 'the succeeded job to be deleted');
      expect(await t.writes()).toEqual([{ job_id: id, attempt: 1 }]);
      expect(supervisor.status().counters.fenced).toBe(0);
    } finally {
      await supervisor.stop({ graceMs: 0 });
    }
  });

  it('rolls back when the job is cancelled or times out mid-handler, or when the row says cancelled though the thread was not told', async () => {
    const t = await createTables('stopped');
    // A heartbeat this slow never reads the cancel request of the third job from its row while the test runs.
    const supervisor = await startTestSupervisor(db, {
      threads: 1,
      concurrency: 4,
      shutdownGraceMs: 0,
      killGraceMs: 60_000,
      heartbeatIntervalMs: 60_000,
      leaseMs: 600_000,
    });
    try {
      const cancelled = await client.addJob('exactly-once', t.payload, { maxAttempts: 1 });
      const timedOut = await client.addJob('exactly-once', t.payload, { maxAttempts: 1, timeoutMs: 1_000 });
      const flagged = await client.addJob('exactly-once', t.payload, { maxAttempts: 1 });
      await eventually(async () => (await t.inside()).length === 3, 'the three handlers to be inside their transactions');

      await client.cancelJob(cancelled);
      // The first two leave their transactions when their signals fire, before any gate opens.
      await eventually(async () => (await t.errors()).length === 2, 'the cancelled and the timed-out runs to be refused');
      // Cancelled as cancelJob would, but without telling the supervisor: only the database knows.
      await db.pool.query(`UPDATE ${s}.jobs SET cancel_requested_at = now() WHERE id = $1`, [flagged]);
      await t.open(1);

      const ends = await Promise.all([cancelled, timedOut, flagged].map((id) => client.waitForJob(id, { timeoutMs: 30_000 })));
      expect(ends.map((j) => j.state)).toEqual(['cancelled', 'failed', 'cancelled']);
      expect(await t.writes()).toEqual([]);
      const errors = await t.errors();
      expect(errors.map((e) => [e.job_id, e.code])).toEqual([
        [cancelled, 'GRAPEVINE_CLAIM_LOST'],
        [timedOut, 'GRAPEVINE_CLAIM_LOST'],
        [flagged, 'GRAPEVINE_CLAIM_LOST'],
      ]);
      expect(errors[0].message).toMatch(/stopped \(job was cancelled\)/);
      expect(errors[1].message).toMatch(/stopped \(job timed out after 1000 ms\)/);
      expect(errors[2].message).toMatch(/no longer holds job \d+ \(it was cancelled\)/);
    } finally {
      await supervisor.stop({ graceMs: 0 });
    }
  });
});

// Short enough that a stopped supervisor loses its job quickly, long enough (several heartbeats) that a live one never does.
const TIMING: Partial<SupervisorOptions> = { leaseMs: 1_500, heartbeatIntervalMs: 200, sweepIntervalMs: 200, reaperIntervalMs: 200 };

function startSupervisorProcess(): Running {
  return startProcess([SUPERVISOR_PROCESS], {
    DATABASE_URL: db.url,
    GRAPEVINE_TEST_SUPERVISOR: JSON.stringify({ schema: db.schema, tasks: FIXTURE_TASKS, threads: 1, concurrency: 2, ...TIMING }),
  });
}

async function stopProcess(proc: Running): Promise<void> {
  if (proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  proc.child.kill('SIGCONT');
  proc.child.kill('SIGTERM');
  const ended = await Promise.race([proc.exited, new Promise<null>((r) => setTimeout(() => r(null), 15_000))]);
  if (ended === null) proc.child.kill('SIGKILL');
}

describe('an exactly-once transaction whose run lost its claim', () => {
  it('never commits: a handler frozen past its lease while another supervisor re-ran the job has its writes refused, and the job has one success', async () => {
    const t = await createTables('frozen');
    const first = startSupervisorProcess();
    let second: Running | null = null;
    try {
      const firstId = (await first.waitFor(/ready \S+/)).slice('ready '.length);
      // The re-run may finish; the first run waits inside its transaction until told.
      await t.open(2);
      const id = await client.addJob('exactly-once', t.payload, { maxAttempts: 3 });
      await eventually(async () => (await t.inside()).length === 1, 'the first run to be inside its transaction');
      expect(await jobRow(id)).toMatchObject({ state: 'running', locked_by: firstId, attempts: 1 });

      // Frozen: no heartbeat, so its lease runs out; its transaction stays open with its insert in it.
      first.child.kill('SIGSTOP');
      second = startSupervisorProcess();
      const secondId = (await second.waitFor(/ready \S+/)).slice('ready '.length);
      const done = await client.waitForJob(id, { timeoutMs: 30_000 });
      expect(done).toMatchObject({ state: 'succeeded', attempts: 2, lockedBy: secondId, result: { attempt: 2, by: 'transaction' } });
      const succeeded = await jobRow(id);

      // Thawed and let go: the first run reaches its commit after all.
      first.child.kill('SIGCONT');
      await t.open(1);
      const [refused] = await eventually(async () => {
        const errors = await t.errors();
        return errors.length > 0 ? errors : null;
      }, 'the first run to hear that its transaction was refused');
      expect(refused).toMatchObject({ job_id: id, attempt: 1, code: 'GRAPEVINE_CLAIM_LOST' });
      expect(refused.message).toMatch(/no longer holds job \d+ \(it was reassigned and has succeeded\)/);

      // The first run's write never landed, the second's landed once, and the job's row is the second run's success.
      expect(await t.writes()).toEqual([{ job_id: id, attempt: 2 }]);
      expect(await jobRow(id)).toEqual(succeeded);
      // The first supervisor's thread recorded a failure for its run; the fence turned it away.
      await eventually(async () => {
        const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM ${s}.jobs WHERE state = 'running' AND locked_by = $1`, [
          firstId,
        ]);
        return rows[0].n === 0;
      }, 'the first supervisor to hold nothing');
      expect(await jobRow(id)).toEqual(succeeded);
    } finally {
      await stopProcess(first);
      if (second) await stopProcess(second);
    }
  });
});

describe("an exactly-once transaction's row lock", () => {
  // The lock is held from the claim check to COMMIT. A trigger makes that
  // window as long as the test likes, as a frozen process, a partition or a
  // thread whose event loop a sibling job keeps busy would: the backend has
  // the row locked and waits, here on an advisory lock the test holds.
  it("holds up neither the heartbeat of its supervisor's other jobs nor the reaper", async () => {
    const t = await createTables('held');
    const gate = `${s}.eo_held_block_gate`;
    const key = `hashtext('${s}.eo_held')`;
    await db.pool.query(`
      CREATE TABLE ${gate} (open boolean NOT NULL);
      CREATE FUNCTION ${s}.eo_hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_xact_lock(${key}); RETURN NEW; END $$;
      CREATE TRIGGER eo_hold_commit BEFORE UPDATE ON ${s}.jobs FOR EACH ROW
        WHEN (NEW.state = 'succeeded' AND OLD.payload ? 'holdCommit') EXECUTE FUNCTION ${s}.eo_hold_commit()`);
    // A session lock, so on a connection of its own to the server itself (even in the pooled pass).
    const holder = new pg.Client({ connectionString: directDatabaseUrl() });
    await holder.connect();
    await holder.query(`SELECT pg_advisory_lock(${key})`);
    let held = true;
    const supervisor = await startTestSupervisor(db, { threads: 1, concurrency: 4, shutdownGraceMs: 0, ...TIMING });
    try {
      const sibling = await client.addJob('block', { gate }, { maxAttempts: 3 });
      const once = await client.addJob('exactly-once', { table: t.payload.table, holdCommit: true }, { maxAttempts: 3 });
      const { rows: stuck } = await eventually(
        () =>
          db.pool
            .query(
              `SELECT now() AS at FROM pg_locks l JOIN pg_stat_activity a USING (pid)
              WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = current_database()
                AND a.application_name LIKE 'grapevine-handler-%' AND position($1 IN a.query) > 0`,
              [db.schema],
            )
            .then((r) => (r.rows.length > 0 ? r : null)),
        'the exactly-once transaction to hold its row, waiting before COMMIT',
      );
      const since = stuck[0].at;

      // The heartbeat goes on renewing the sibling's lease well past the lease it had then.
      await eventually(async () => {
        const { rows } = await db.pool.query(
          `SELECT lease_until > $2::timestamptz + interval '3 s' AS renewed FROM ${s}.jobs WHERE id = $1`,
          [sibling, since],
        );
        return rows[0].renewed;
      }, "the heartbeat to renew the sibling job's lease");
      // The reaper goes on returning orphans: a job whose owner vanished long ago runs again here.
      const { rows: orphan } = await db.pool.query(
        `INSERT INTO ${s}.jobs (task, payload, state, locked_by, lease_until, claim_token, attempts, started_at)
         VALUES ('noop', '{}', 'running', 'vanished', now() - interval '1 minute', nextval('${s}.claim_tokens'), 1, now())
         RETURNING id::text AS id`,
      );
      expect(await client.waitForJob(orphan[0].id, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', attempts: 2 });

      // Let go, the transaction commits: one success, one write; the sibling ran once.
      await holder.query(`SELECT pg_advisory_unlock(${key})`);
      held = false;
      expect(await client.waitForJob(once, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', attempts: 1 });
      expect(await t.writes()).toEqual([{ job_id: once, attempt: 1 }]);
      await db.pool.query(`INSERT INTO ${gate} VALUES (true)`);
      expect(await client.waitForJob(sibling, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', attempts: 1 });
    } finally {
      if (held) await holder.query(`SELECT pg_advisory_unlock(${key})`);
      await holder.end();
      await supervisor.stop({ graceMs: 0 });
      await db.pool.query(`DROP TRIGGER eo_hold_commit ON ${s}.jobs; DROP FUNCTION ${s}.eo_hold_commit()`);
    }
  });
});
