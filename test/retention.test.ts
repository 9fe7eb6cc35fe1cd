import { describe, expect, it } from 'vitest';
import { pruneFinished } from '../src/sql/jobs.ts';
import { useMigratedSchema } from './helpers/db.ts';

const db = useMigratedSchema('retention');
const { s } = db;

const WEEK_MS = 7 * 24 * 3_600_000;

/** Runs the prune as the reaper does, and says how often it scanned the whole table. */
async function prune(): Promise<{ pruned: number; seqScans: number }> {
  const c = await db.pool.connect();
  try {
    await c.query('BEGIN');
    // Counters not yet flushed from this connection's earlier statements show here too: compare.
    const seqScans = async () =>
      (await c.query(`SELECT seq_scan::int AS n FROM pg_stat_xact_user_tables WHERE relid = '${s}.jobs'::regclass`)).rows[0].n as number;
    const before = await seqScans();
    const pruned = await pruneFinished(c, db.schema, { retentionMs: WEEK_MS, batchSize: 10_000 });
    const after = await seqScans();
    await c.query('COMMIT');
    return { pruned, seqScans: after - before };
  } finally {
    c.release();
  }
}

describe('pruning finished jobs', () => {
  // First, before anything has finished: statistics that say no row has a
  // finish time made the planner prefer scanning the table to the BRIN index.
  it('does not read the whole table when nothing has finished yet', async () => {
    await db.pool.query(`INSERT INTO ${s}.jobs (task, run_at) SELECT 'later', now() + interval '6 hours' FROM generate_series(1, 50000)`);
    await db.pool.query(`VACUUM (ANALYZE) ${s}.jobs`);
    expect(await prune()).toEqual({ pruned: 0, seqScans: 0 });
  });

  it('deletes only terminal jobs finished before the retention, without reading the whole table', async () => {
    // The deep queue of jobs due later from the test above, then jobs that finished long ago and just now.
    const { rows: old } = await db.pool.query(
      `INSERT INTO ${s}.jobs (task, state, finished_at)
       SELECT 'done', (ARRAY['succeeded', 'failed', 'cancelled'])[1 + g % 3], now() - interval '8 days' FROM generate_series(1, 300) g
       RETURNING id`,
    );
    await db.pool.query(
      `INSERT INTO ${s}.jobs (task, state, finished_at) SELECT 'done', 'succeeded', now() - interval '1 day' FROM generate_series(1, 100)`,
    );
    // Statistics and page-range summaries as autovacuum would leave them.
    await db.pool.query(`VACUUM (ANALYZE) ${s}.jobs`);

    const { pruned, seqScans } = await prune();
    expect(pruned).toBe(old.length);
    expect(seqScans).toBe(0);
    const { rows: left } = await db.pool.query(`SELECT task, count(*)::int AS n FROM ${s}.jobs GROUP BY task ORDER BY task`);
    expect(left).toEqual([
      { task: 'done', n: 100 },
      { task: 'later', n: 50000 },
    ]);
  });
});
