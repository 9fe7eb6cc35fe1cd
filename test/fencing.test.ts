import { describe, expect, it } from 'vitest';
import type { Supervisor, SupervisorOptions } from '../supervisor/public.ts';
import { claimByIds, completeJobs, failJobs, reapExpired, releaseJobs, renewLeases } from '../src/sql/jobs.ts';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';

const db = useMigratedSchema('fencing');
const { client, s } = db;

// The outcome paths exactly as threads and supervisors run them.
async function claim(id: string, owner: string): Promise<string> {
  const rows = await claimByIds(db.pool, db.schema, { ids: [id], tasks: ['square'], queues: null, owner, thread: 1, leaseMs: 60_000 });
  expect(rows, `${owner} claims job ${id}`).toHaveLength(1);
  return rows[0].claim_token;
}

/** Outcome writes answer with the ids the fence rejected; the tests read what was accepted. */
function accepted(submitted: string[], rejected: string[]): string[] {
  return [...new Set(submitted)].filter((id) => !rejected.includes(id));
}

/** Ids whose outcome was accepted. */
async function complete(outcomes: Array<{ id: string; token: string; result: unknown }>): Promise<string[]> {
  const jobs = outcomes.map((o) => ({ id: o.id, token: o.token, result: JSON.stringify(o.result) }));
  return accepted(
    outcomes.map((o) => o.id),
    (await completeJobs(db.pool, db.schema, { jobs })).rejected,
  );
}

async function fail(id: string, token: string, error: string, retryable = true): Promise<string[]> {
  const { rejected } = await failJobs(db.pool, db.schema, { jobs: [{ id, token, error, retryable }], retryBaseMs: 10, retryMaxMs: 1_000 });
  return accepted([id], rejected);
}

async function release(owner: string, id: string, reason: string, count: boolean, thread = 1): Promise<string[]> {
  return releaseJobs(db.pool, db.schema, { owner, jobs: [{ id, thread, reason, count }] });
}

async function expireAndReap(id: string): Promise<string[]> {
  await db.pool.query(`UPDATE ${s}.jobs SET lease_until = now() - interval '1 second' WHERE id = $1`, [id]);
  return reapExpired(db.pool, db.schema);
}

async function row(id: string) {
  const { rows } = await db.pool.query(`SELECT * FROM ${s}.jobs WHERE id = $1`, [id]);
  return rows[0];
}

describe('outcome writes are fenced on the claim token', () => {
  it('rejects completing or failing with the token of a claim its owner released', async () => {
    const id = await client.addJob('square', { n: 1 });
    const token = await claim(id, 'sup-a');
    expect(await release('sup-a', id, 'given back on purpose', false)).toEqual([id]);
    const released = await row(id);

    expect(await complete([{ id, token, result: { late: true } }])).toEqual([]);
    expect(await fail(id, token, 'late failure')).toEqual([]);
    expect(await row(id)).toEqual(released);
    expect(released).toMatchObject({ state: 'pending', result: null, claim_token: null, last_error: 'given back on purpose' });
  });

  it('does not let a dead thread release a job another thread of the same supervisor claimed since', async () => {
    // Thread 1's claim rolled back (its connection died while committing); thread 2 pulled the job.
    const id = await client.addJob('square', { n: 3 });
    const rows = await claimByIds(db.pool, db.schema, {
      ids: [id],
      tasks: ['square'],
      queues: null,
      owner: 'sup-a',
      thread: 2,
      leaseMs: 60_000,
    });
    const claimedBy2 = await row(id);
    expect(await release('sup-a', id, 'thread crashed', true, 1)).toEqual([]);
    expect(await row(id)).toEqual(claimedBy2);
    expect(await complete([{ id, token: rows[0].claim_token, result: { by: 2 } }])).toEqual([id]);
  });

  it('rejects the old owner of a reaped job that another supervisor claimed again, and accepts the new owner', async () => {
    const id = await client.addJob('square', { n: 2 });
    const oldToken = await claim(id, 'sup-a');
    expect(await expireAndReap(id)).toEqual([id]);
    // Between the reap and the new claim the old token is just as dead.
    expect(await complete([{ id, token: oldToken, result: { by: 'a' } }])).toEqual([]);

    const newToken = await claim(id, 'sup-b');
    expect(newToken).not.toBe(oldToken);
    const claimedByB = await row(id);
    expect(await complete([{ id, token: oldToken, result: { by: 'a' } }])).toEqual([]);
    expect(await fail(id, oldToken, 'a failed late', false)).toEqual([]);
    expect(await release('sup-a', id, 'a gives back what it no longer has', true)).toEqual([]);
    expect(await row(id)).toEqual(claimedByB);
    expect(claimedByB).toMatchObject({ state: 'running', locked_by: 'sup-b', attempts: 2, result: null });

    expect(await complete([{ id, token: newToken, result: { by: 'b' } }])).toEqual([id]);
    expect(await row(id)).toMatchObject({ state: 'succeeded', result: { by: 'b' }, attempts: 2 });
  });

  it('accepts the current claims of a batch and rejects only its stale ones', async () => {
    const [fresh, stale] = await client.addJobs([
      { task: 'square', payload: { n: 3 } },
      { task: 'square', payload: { n: 4 } },
    ]);
    const freshToken = await claim(fresh, 'sup-a');
    const staleToken = await claim(stale, 'sup-a');
    await expireAndReap(stale);
    await claim(stale, 'sup-b');

    const accepted = await complete([
      { id: fresh, token: freshToken, result: { ok: 1 } },
      { id: stale, token: staleToken, result: { ok: 2 } },
    ]);
    expect(accepted).toEqual([fresh]);
    expect(await row(fresh)).toMatchObject({ state: 'succeeded', result: { ok: 1 } });
    expect(await row(stale)).toMatchObject({ state: 'running', locked_by: 'sup-b', result: null });
  });

  it('records an outcome once: a repeated complete or fail with the same token changes nothing', async () => {
    const id = await client.addJob('square', { n: 5 });
    const token = await claim(id, 'sup-a');
    expect(await complete([{ id, token, result: { first: true } }])).toEqual([id]);
    const done = await row(id);
    expect(await complete([{ id, token, result: { second: true } }])).toEqual([]);
    expect(await fail(id, token, 'failure after success')).toEqual([]);
    expect(await row(id)).toEqual(done);
    expect(done).toMatchObject({ state: 'succeeded', result: { first: true } });
  });

  it('does not let one supervisor release or renew the job of another', async () => {
    const id = await client.addJob('square', { n: 6 });
    const token = await claim(id, 'sup-a');
    await db.pool.query(`UPDATE ${s}.jobs SET lease_until = now() + interval '1 second' WHERE id = $1`, [id]);
    const before = await row(id);

    expect(await release('sup-b', id, 'not mine to give', true)).toEqual([]);
    await renewLeases(db.pool, db.schema, { owner: 'sup-b', ids: [id], leaseMs: 3_600_000 });
    expect(await row(id)).toEqual(before);
    expect(before).toMatchObject({ state: 'running', locked_by: 'sup-a' });

    expect(await complete([{ id, token, result: { owner: 'a' } }])).toEqual([id]);
  });
});

describe('a handler that finishes after its job was reaped and run elsewhere', () => {
  function start(options: Partial<SupervisorOptions>): Promise<Supervisor> {
    return startTestSupervisor(db, {
      threads: 1,
      concurrency: 2,
      sweepIntervalMs: 200,
      shutdownGraceMs: 0,
      ...options,
    });
  }

  it('has its outcome rejected: the job keeps the one success of the second run', async () => {
    // Each attempt of a block-attempt job waits for its own row here.
    const gate = `${s}.gate_attempts`;
    await db.pool.query(`CREATE TABLE ${gate} (attempt integer NOT NULL, open boolean NOT NULL)`);

    // No heartbeat and no reaper of its own during the test: only the test expires its lease.
    const first = await start({ heartbeatIntervalMs: 60_000, leaseMs: 120_000, reaperIntervalMs: 3_600_000 });
    let second: Supervisor | null = null;
    try {
      const id = await client.addJob('block-attempt', { gate }, { maxAttempts: 3 });
      await eventually(async () => {
        const r = await row(id);
        return r.state === 'running' && r.locked_by === first.id;
      }, 'the first supervisor to run the job');
      // Keep the first supervisor from taking the job back after the reap.
      first.pause();
      // Nothing but the running job may hold a slot, or a pull sent earlier could claim the job back.
      await eventually(() => first.status().inFlight === 1, 'claims sent before the pause to finish');

      await db.pool.query(`UPDATE ${s}.jobs SET lease_until = now() - interval '1 second' WHERE id = $1`, [id]);
      expect((await first.reapNow()).reapedJobs).toEqual([id]);

      second = await start({ heartbeatIntervalMs: 200, leaseMs: 2_000, reaperIntervalMs: 200 });
      const secondId = second.id;
      await eventually(async () => {
        const r = await row(id);
        return r.state === 'running' && r.locked_by === secondId && r.attempts === 2;
      }, 'the second supervisor to claim the reaped job');
      await db.pool.query(`INSERT INTO ${gate} VALUES (2, true)`);
      const finished = await client.waitForJob(id, { timeoutMs: 30_000 });
      expect(finished).toMatchObject({ state: 'succeeded', attempts: 2, result: { attempt: 2 }, lockedBy: secondId });

      // Now the first run's handler returns too, long after losing its claim.
      await db.pool.query(`INSERT INTO ${gate} VALUES (1, true)`);
      await eventually(() => first.status().counters.fenced >= 1, 'the first supervisor to report its outcome as fenced');
      expect(first.status().counters.fenced).toBe(1);
      expect(second.status().counters.fenced).toBe(0);
      expect(await row(id)).toMatchObject({
        state: 'succeeded',
        attempts: 2,
        result: { attempt: 2 },
        locked_by: secondId,
        finished_at: finished.finishedAt,
      });
    } finally {
      await first.stop({ graceMs: 0 });
      await second?.stop({ graceMs: 0 });
    }
  });
});
