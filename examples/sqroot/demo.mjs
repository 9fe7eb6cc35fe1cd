import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient, startSupervisor } from 'grapevine-jobs';

const TASKS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'tasks');

/**
 * The square-root work queue: a results table, one job per number enqueued
 * in the same transaction as its row, a supervisor with several threads
 * computing them, and the table printed at the end.
 */
export async function runSqrootDemo({ connectionString, numbers, threads, schema = 'grapevine_demo', print = console.log, logger }) {
  const table = `${schema}.sqroot`;
  const client = createClient({ connectionString, schema });
  await client.migrate();
  const pool = new (await import('pg')).default.Pool({ connectionString, max: 2 });
  await pool.query(`DROP TABLE IF EXISTS ${table}`);
  await pool.query(`CREATE TABLE ${table} (in_val integer PRIMARY KEY, out_val double precision)`);

  const supervisor = await startSupervisor({ connectionString, schema, tasks: TASKS, threads, concurrency: 2, logger });
  print(`supervisor ${supervisor.id} is running ${threads} threads`);

  // Each number goes in with its job, atomically: no row without a job, no job without a row.
  const conn = await pool.connect();
  const ids = [];
  try {
    await conn.query('BEGIN');
    for (const n of numbers) {
      await conn.query(`INSERT INTO ${table} (in_val) VALUES ($1)`, [n]);
      ids.push(await client.addJob('sqroot', { n, table }, { db: conn }));
    }
    await conn.query('COMMIT');
  } finally {
    conn.release();
  }
  print(`enqueued ${ids.length} numbers`);

  const jobs = await Promise.all(
    ids.map((id) =>
      client.waitForJob(id, { timeoutMs: 60_000 }).then((job) => {
        print(`  thread ${job.result.threadId} sqroot-ed ${job.result.in}`);
        return job;
      }),
    ),
  );

  const { rows } = await pool.query(`SELECT in_val, out_val FROM ${table} ORDER BY in_val`);
  const threadOf = new Map(jobs.map((j) => [j.result.in, j.result.threadId]));
  print('\n in_val | out_val  | thread');
  print('--------+----------+-------');
  for (const r of rows) print(`${String(r.in_val).padStart(7)} | ${r.out_val.toFixed(6)} | ${String(threadOf.get(r.in_val)).padStart(6)}`);
  const used = new Set(threadOf.values());
  print(`\n${rows.length} results from ${used.size} threads; shutting down`);

  await supervisor.stop();
  await client.close();
  await pool.end();
  return { results: rows, threadsUsed: used.size };
}
