import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../src/index.ts';
import { jobStatements } from '../src/sql/jobs.ts';
import { withValues } from '../src/sql/statement.ts';
import { useTestSchema } from './helpers/db.ts';

const db = useTestSchema('claims');
const client = createClient({ connectionString: db.url, schema: db.schema });
const sql = jobStatements(db.schema);
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
      const pulled = await c.query(withValues(sql.claimNext, [256, ['noop'], 'sup-a', 1, 60_000, null]));
      expect(pulled.rows).toHaveLength(256);
      const byId = await c.query(withValues(sql.claimByIds, [ids, ['noop'], 'sup-a', 1, 60_000, null]));
      expect(byId.rows).toHaveLength(200);
    });
    expect(reads.seq_scan).toBe(0);
    expect(reads.idx_scan).toBeGreaterThan(0);
  });

  it('draw one fencing token per claim, so every job of a batch carries the same one', async () => {
    const first = await db.pool.query(withValues(sql.claimNext, [10, ['noop'], 'sup-a', 1, 60_000, null]));
    const second = await db.pool.query(withValues(sql.claimNext, [10, ['noop'], 'sup-a', 1, 60_000, null]));
    const tokens = (r: typeof first) => new Set(r.rows.map((row) => row.claim_token as string));
    expect(tokens(first).size).toBe(1);
    expect(tokens(second).size).toBe(1);
    expect([...tokens(first)][0]).not.toBe([...tokens(second)][0]);
  });
});
