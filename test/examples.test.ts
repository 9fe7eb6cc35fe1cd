import { afterAll, describe, expect, it } from 'vitest';
import { createClient } from '../supervisor/public.ts';
import { databaseUrl, schemaName } from './helpers/db.ts';
import { CLI, ROOT, run, start } from './helpers/process.ts';
import { startProxy } from './helpers/proxy.ts';
import pg from 'pg';

const url = databaseUrl();
const pool = new pg.Pool({ connectionString: url, max: 2 });
const demoSchema = schemaName('demo');

afterAll(async () => {
  for (const s of [demoSchema, 'embed_example']) await pool.query(`DROP SCHEMA IF EXISTS "${s}" CASCADE`);
  await pool.end();
});

describe('examples', () => {
  it('grapevine demo computes the square roots on at least two threads and stops cleanly', async () => {
    const result = await run([CLI, 'demo', '--count', '8', '--threads', '2', '--schema', demoSchema], { DATABASE_URL: url });
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/8 results from 2 threads/);
    expect(result.stdout).toMatch(/\s4 \| 2\.000000 \|/);
    const { rows } = await pool.query(`SELECT count(*)::int AS n FROM "${demoSchema}".sqroot WHERE out_val = sqrt(in_val)`);
    expect(rows[0].n).toBe(8);
  });

  it('examples/embed enqueues inside its request transaction and runs the job in the same process', async () => {
    const server = start([`${ROOT}/examples/embed/server.mjs`], { DATABASE_URL: url, PORT: '0' });
    try {
      const line = await server.waitFor(/listening on http:\/\/127\.0\.0\.1:\d+/);
      const base = line.replace('listening on ', '');
      const created = await fetch(`${base}/orders`, { method: 'POST', body: JSON.stringify({ item: 'tea' }) });
      expect(created.status).toBe(201);
      const { orderId, jobId } = await created.json();
      const client = createClient({ connectionString: url, schema: 'embed_example' });
      const job = await client.waitForJob(jobId);
      await client.close();
      expect(job).toMatchObject({ state: 'succeeded', result: { orderId, item: 'tea' } });
      const { rows } = await pool.query('SELECT receipt_sent_at FROM embed_example.orders WHERE id = $1', [orderId]);
      expect(rows[0].receipt_sent_at).not.toBeNull();
      const bad = await fetch(`${base}/orders`, { method: 'POST', body: '{}' });
      expect(bad.status).toBe(400);
    } finally {
      server.child.kill('SIGTERM');
    }
    expect((await server.exited).code).toBe(0);
  });

  it('examples/embed keeps serving when PostgreSQL ends its connections, idle ones and new ones alike', async () => {
    const proxy = await startProxy(url);
    const server = start([`${ROOT}/examples/embed/server.mjs`], { DATABASE_URL: proxy.url, PORT: '0' });
    try {
      const line = await server.waitFor(/listening on http:\/\/127\.0\.0\.1:\d+/);
      const base = line.replace('listening on ', '');
      const order = () => fetch(`${base}/orders`, { method: 'POST', body: JSON.stringify({ item: 'tea' }) }).then((r) => r.status);
      expect(await order()).toBe(201);
      // What a restart does: every backend ends, idle connections included, and
      // the first new ones end again as soon as they are ready.
      proxy.endAsReady(3);
      // Two statements: in one, nothing would stop PostgreSQL from calling pg_terminate_backend() before the port filter.
      const behind = await pool.query('SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1)', [proxy.upstreamPorts()]);
      expect(behind.rows.length).toBeGreaterThan(0);
      await pool.query('SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid', [behind.rows.map((r) => r.pid)]);
      // Orders may fail while connections are ending; the service must not.
      let status = 0;
      for (let i = 0; i < 10 && status !== 201; i++) status = await order();
      expect(status).toBe(201);
    } finally {
      server.child.kill('SIGTERM');
    }
    const exited = await server.exited;
    expect(exited.stderr).not.toMatch(/Unhandled 'error' event/);
    expect(exited.code).toBe(0);
    await proxy.close();
  });
});
