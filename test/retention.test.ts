import { describe, expect, it } from 'vitest';
import { jobStatements } from '../src/sql/jobs.ts';
import { withValues } from '../src/sql/statement.ts';
import { useMigratedSchema } from './helpers/db.ts';

const db = useMigratedSchema('retention');
const { client, s } = db;
const sql = jobStatements(db.schema);

const WEEK_MS = 7 * 24 * 3_600_000;

describe('pruning finished jobs', () => {
  it('deletes only terminal jobs finished before the retention, without reading the whole table', async () => {
    // A deep queue of jobs due later, then jobs that finished long ago and just now.
    await db.pool.query(
      `INSERT INTO ${s}.jobs (task, run_at) SELECT 'later', now() + interval '6 hours' FROM generate_series(1, 50000)`,
    );
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

    const c = await db.pool.connect();
    try {
      await c.query('BEGIN');
      // Counters not yet flushed from this connection's earlier statements show here too: compare.
      const seqScans = async () =>
        (await c.query(`SELECT seq_scan::int AS n FROM pg_stat_xact_user_tables WHERE relid = '${s}.jobs'::regclass`)).rows[0].n as number;
      const before = await seqScans();
      const deleted = await c.query(withValues(sql.pruneFinished, [WEEK_MS, 10_000]));
      const after = await seqScans();
      await c.query('COMMIT');
      expect(deleted.rowCount).toBe(old.length);
      expect(after - before).toBe(0);
    } finally {
      c.release();
    }
    const { rows: left } = await db.pool.query(`SELECT task, count(*)::int AS n FROM ${s}.jobs GROUP BY task ORDER BY task`);
    expect(left).toEqual([
      { task: 'done', n: 100 },
      { task: 'later', n: 50000 },
    ]);
  });
});
