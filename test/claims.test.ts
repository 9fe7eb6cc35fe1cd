import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../supervisor/public.ts';
import { claimByIds, claimNext, hasDue, type ClaimParams } from '../src/sql/jobs.ts';
import { useTestSchema } from './helpers/db.ts';

const db = useTestSchema('claims');
const client = createClient({ connectionString: db.url, schema: db.schema });
/** A claim by thread 1 of 'sup-a', for noop jobs of any queue. */
const by: ClaimParams = { tasks: ['noop'], queues: null, owner: 'sup-a', thread: 1, leaseMs: 60_000 };
const s = `"${db.schema}"`;
beforeAll(() => client.migrate());
afterAll(() => client.close());

/** Runs `body` in a transaction and reports how it read the jobs table (this transaction only). */
async function tableReads(body: (c: import('pg').PoolClient) => Promise<void>): Promise<{ seq_scan: number; idx_scan: number }> {
  const c = await db.pool.connect();
  try {
    await c.query('BEGIN');
    // Counters not yet flushed from this connection's earlier statements show here too: compare.
    const read = async () =>
      (await c.query(`SELECT seq_scan::int, idx_scan::int FROM pg_stat_xact_user_tables WHERE relid = '${s}.jobs'::regclass`)).rows[0];
    const before = await read();
    await body(c);
    const after = await read();
    return { seq_scan: after.seq_scan - before.seq_scan, idx_scan: after.idx_scan - before.idx_scan };
  } finally {
    await c.query('ROLLBACK');
    c.release();
  }
}

describe('claims', () => {
  // Once ANALYZE knows the table, a planner left to itself hashes the claimed
  // ids against a scan of every row: each claim then costs the whole table.
  it('never read the whole table, even with statistics that make a full scan look cheap', async () => {
    await client.addJobs(Array.from({ length: 3000 }, (_, n) => ({ task: 'noop', payload: { n } })));
    await db.pool.query(`ANALYZE ${s}.jobs`);
    const { rows } = await db.pool.query(`SELECT id FROM ${s}.jobs ORDER BY id DESC LIMIT 200`);
    const ids = rows.map((r) => String(r.id));

    const reads = await tableReads(async (c) => {
      expect(await claimNext(c, db.schema, { ...by, limit: 256 })).toHaveLength(256);
      expect(await claimByIds(c, db.schema, { ...by, ids })).toHaveLength(200);
    });
    expect(reads.seq_scan).toBe(0);
    expect(reads.idx_scan).toBeGreaterThan(0);
  });

  it('and the look for due jobs never read the jobs scheduled for later', async () => {
    // Its own schema: the jobs above are due, and this test needs a table where nothing is.
    const later = createClient({ connectionString: db.url, schema: `${db.schema}_later` });
    const l = `"${db.schema}_later"`;
    const laterSchema = `${db.schema}_later`;
    try {
      await later.migrate();
      await db.pool.query(
        `INSERT INTO ${l}.jobs (task, payload, priority, run_at)
         SELECT 'noop', '{}', n % 3, now() + interval '1 hour' FROM generate_series(1, 60000) n`,
      );
      await db.pool.query(`ANALYZE ${l}.jobs`);
      /** Pages of the pending index `body` touched, on one connection whose statistics are flushed after it. */
      const indexReads = async (body: (c: import('pg').PoolClient) => Promise<void>) => {
        const read = async () =>
          (
            await db.pool.query(
              `SELECT (idx_blks_hit + idx_blks_read)::int AS n FROM pg_statio_user_indexes WHERE indexrelid = '${l}.jobs_pending_idx'::regclass`,
            )
          ).rows[0].n as number;
        const c = await db.pool.connect();
        try {
          await c.query('SELECT pg_stat_force_next_flush()');
          await c.query('SELECT 1');
          const before = await read();
          await body(c);
          await c.query('SELECT pg_stat_force_next_flush()');
          await c.query('SELECT 1');
          return (await read()) - before;
        } finally {
          c.release();
        }
      };

      const reads = await indexReads(async (c) => {
        expect(await claimNext(c, laterSchema, { ...by, limit: 256 })).toHaveLength(0);
        expect(await hasDue(c, laterSchema, { tasks: ['noop'], queues: null })).toBe(false);
      });
      const indexPages = Number((await db.pool.query(`SELECT pg_relation_size('${l}.jobs_pending_idx') / 8192 AS n`)).rows[0].n);
      // Three priorities: a few descents each (about 30 pages), where a walk of the index reads all of it.
      expect(reads).toBeLessThan(indexPages / 5);

      // Due jobs at two priorities: the higher one is taken first.
      const [low] = await later.addJobs([{ task: 'noop', payload: {}, priority: 0 }]);
      const [high] = await later.addJobs([{ task: 'noop', payload: {}, priority: 2 }]);
      expect(await hasDue(db.pool, laterSchema, { tasks: ['noop'], queues: null })).toBe(true);
      expect(await hasDue(db.pool, laterSchema, { tasks: ['other'], queues: null })).toBe(false);
      const first = await claimNext(db.pool, laterSchema, { ...by, limit: 1 });
      expect(first.map((r) => r.id)).toEqual([high]);
      const second = await claimNext(db.pool, laterSchema, { ...by, limit: 5 });
      expect(second.map((r) => r.id)).toEqual([low]);
    } finally {
      await later.close();
      await db.pool.query(`DROP SCHEMA IF EXISTS ${l} CASCADE`);
    }
  });

  it('draw one fencing token per claim, so every job of a batch carries the same one', async () => {
    const first = await claimNext(db.pool, db.schema, { ...by, limit: 10 });
    const second = await claimNext(db.pool, db.schema, { ...by, limit: 10 });
    const tokens = (rows: typeof first) => new Set(rows.map((row) => row.claim_token));
    expect(tokens(first).size).toBe(1);
    expect(tokens(second).size).toBe(1);
    expect([...tokens(first)][0]).not.toBe([...tokens(second)][0]);
  });
});
