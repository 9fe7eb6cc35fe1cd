import { afterAll, describe, expect, it } from 'vitest';
import { createClient, startSupervisor, type Supervisor } from '../supervisor/public.ts';
import { Listener } from '../src/listener.ts';
import { silentLogger } from '../src/log.ts';
import { eventually, FIXTURE_TASKS, useTestSchema } from './helpers/db.ts';
import { startProxy } from './helpers/proxy.ts';

const db = useTestSchema('listener');
const client = createClient({ connectionString: db.url, schema: db.schema });
const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  await client.close();
});

async function supervisor(url = db.url, extra: Record<string, unknown> = {}): Promise<Supervisor> {
  const s = await startSupervisor({
    connectionString: url,
    schema: db.schema,
    tasks: FIXTURE_TASKS,
    threads: 1,
    concurrency: 4,
    // Long sweeps: these tests must see jobs arrive through LISTEN, not the backstop.
    sweepIntervalMs: 600_000,
    logger: silentLogger(),
    ...extra,
  });
  cleanups.push(() => s.stop({ graceMs: 0 }));
  return s;
}

describe('the LISTEN connection', () => {
  it('comes back after its backend is terminated, again and again, and runs the jobs enqueued while it was gone', async () => {
    const sup = await supervisor();
    for (let round = 1; round <= 10; round++) {
      const pid = await eventually(() => sup.listenerPid(), 'a LISTEN connection');
      await db.pool.query('SELECT pg_terminate_backend($1)', [pid]);
      const id = await client.addJob('square', { n: round * round }); // sent into the gap
      const job = await client.waitForJob(id);
      expect(job.result).toMatchObject({ root: round });
      await eventually(() => sup.status().counters.listenerReconnects >= round, `reconnect ${round}`);
    }
  });

  it('detects a half-open socket by its health check, reconnects, and hears notifications again', async () => {
    const proxy = await startProxy(db.url);
    cleanups.push(() => proxy.close());
    const sup = await supervisor(proxy.url, { listenerHealthCheckMs: 300 });
    const first = await client.addJob('square', { n: 4 });
    await client.waitForJob(first);
    expect(proxy.blackholeListeners()).toBe(1);
    await eventually(() => sup.status().counters.listenerReconnects >= 1, 'the dead LISTEN socket to be replaced');
    const after = await client.addJob('square', { n: 9 });
    expect((await client.waitForJob(after)).result).toMatchObject({ root: 3 });
  });

  it('notices a subscription lost while the socket stays up, and subscribes again', async () => {
    const channel = `${db.schema}_probe`;
    const listener = new Listener({
      connectionString: db.url,
      channels: [channel],
      applicationName: 'grapevine-test',
      logger: silentLogger(),
      healthCheckMs: 60_000,
    });
    cleanups.push(() => listener.stop());
    let connected = 0;
    listener.on('connected', () => connected++);
    await listener.start();
    expect(connected).toBe(1);
    // UNLISTEN on the listener's own session, as a pooler recycling it would.
    await (listener as unknown as { client: { query(q: string): Promise<unknown> } }).client.query('UNLISTEN *');
    expect(await listener.checkHealth()).toBe(false);
    await eventually(() => connected === 2, 'a fresh subscription');
    const heard = new Promise<string>((resolve) => listener.once('notification', (_c: string, payload: string) => resolve(payload)));
    await db.pool.query('SELECT pg_notify($1, $2)', [channel, 'hello']);
    expect(await heard).toBe('hello');
  });

  it('keeps running jobs through a terminated thread connection', async () => {
    const sup = await supervisor();
    const gate = `"${db.schema}".gate_conn`;
    await db.pool.query(`CREATE TABLE ${gate} (open boolean)`);
    const id = await client.addJob('block', { gate }, { maxAttempts: 5 });
    await eventually(async () => (await client.getJob(id))?.state === 'running', 'the job to run');
    // Only this file's: other files' supervisors run on the same server at the same time. A
    // connection's last statement names the schema it works in.
    const { rows } = await db.pool.query(
      `SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity
        WHERE (application_name LIKE 'grapevine-thread-%' OR application_name LIKE 'grapevine-handler-%') AND strpos(query, $1) > 0`,
      [db.schema],
    );
    expect(rows.some((r) => r.killed)).toBe(true);
    await db.pool.query(`INSERT INTO ${gate} VALUES (true)`);
    const job = await client.waitForJob(id);
    expect(job.state).toBe('succeeded');
    expect(sup.status().restarts).toBe(0);
  });
});
