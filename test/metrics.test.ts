import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, DEFAULTS, type Supervisor } from '../supervisor/public.ts';
import { eventually, startTestSupervisor, useTestSchema } from './helpers/db.ts';

const db = useTestSchema('metrics');
// A role that is not a superuser, so that a connection limit stops its LISTEN
// connection from coming back: the window in which /readyz must fail.
const role = `t_metrics_${randomBytes(3).toString('hex')}`;
// A password too: the embedded server asks for one.
const password = randomBytes(12).toString('hex');
const url = Object.assign(new URL(db.url), { username: role, password }).toString();
const client = createClient({ connectionString: url, schema: db.schema });
let sup: Supervisor;
let base: string;

beforeAll(async () => {
  await db.pool.query(`CREATE ROLE "${role}" LOGIN PASSWORD '${password}'`);
  // Migrations say CREATE SCHEMA IF NOT EXISTS, which needs the right even when the schema is there.
  await db.pool.query(`GRANT CREATE ON DATABASE "${new URL(db.url).pathname.slice(1)}" TO "${role}"`);
  sup = await startTestSupervisor({ ...db, url }, { threads: 2, metricsPort: 0, queueStatsIntervalMs: 100 });
  const address = sup.metricsAddress()!;
  base = `http://${address.host}:${address.port}`;
});
afterAll(async () => {
  await sup?.stop({ graceMs: 0 });
  await client.close();
  await db.pool.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [role]);
  await db.pool.query(`DROP OWNED BY "${role}" CASCADE`);
  await db.pool.query(`DROP ROLE IF EXISTS "${role}"`);
});

/** The value of one sample of the scrape, or undefined if it is not there. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = match[2] ? match[2].split(',') : [];
    if (wanted.every((w) => have.includes(w)) && have.length === wanted.length) return Number(match[3]);
  }
  return undefined;
}

const scrape = async () => (await fetch(`${base}/metrics`)).text();

describe('the metrics port', () => {
  it('counts a known workload by outcome, task and queue, with handler durations', async () => {
    const ok = await client.addJobs(Array.from({ length: 5 }, (_, n) => ({ task: 'square', payload: { n } })));
    const failed = await client.addJobs(Array.from({ length: 2 }, () => ({ task: 'fail', payload: {}, maxAttempts: 1, queue: 'email' })));
    for (const id of [...ok, ...failed]) await client.waitForJob(id);
    // The outcome reaches the table before the thread reports it to the supervisor.
    const text = await eventually(async () => {
      const t = await scrape();
      return sample(t, 'grapevine_jobs_total', { outcome: 'failed', task: 'fail', queue: 'email' }) === 2 &&
        sample(t, 'grapevine_jobs_total', { outcome: 'succeeded', task: 'square', queue: 'default' }) === 5
        ? t
        : undefined;
    }, 'the workload in the metrics');
    expect(sample(text, 'grapevine_job_duration_seconds_count', { task: 'square', queue: 'default' })).toBe(5);
    expect(sample(text, 'grapevine_job_duration_seconds_count', { task: 'fail', queue: 'email' })).toBe(2);
    expect(sample(text, 'grapevine_job_duration_seconds_bucket', { task: 'square', queue: 'default', le: '+Inf' })).toBe(5);
    expect(sample(text, 'grapevine_threads')).toBe(2);
    expect(sample(text, 'grapevine_threads_busy')).toBe(0);
    expect(sample(text, 'grapevine_jobs_running')).toBe(0);
    expect(sample(text, 'grapevine_connections_max')).toBe(DEFAULTS.maxConnections);
    expect(sample(text, 'grapevine_connections')).toBeGreaterThan(0);
    expect(sample(text, 'grapevine_connections')).toBeLessThanOrEqual(DEFAULTS.maxConnections);
    expect(sample(text, 'grapevine_connections_waiting')).toBe(0);
    expect(sample(text, 'grapevine_thread_restarts_total')).toBe(0);
    expect(sample(text, 'grapevine_listener_reconnects_total')).toBe(0);
  });

  it("serves the queues' depth as the elected supervisor measured it", async () => {
    // Nobody runs this task, so its jobs stay due; the others wait for their time.
    await client.addJobs([
      { task: 'nobody-runs-this', queue: 'reports' },
      { task: 'nobody-runs-this', queue: 'reports' },
      { task: 'square', payload: { n: 1 }, queue: 'later', runAt: new Date(Date.now() + 3_600_000) },
    ]);
    await db.pool.query(`UPDATE "${db.schema}".jobs SET run_at = now() - interval '1 minute' WHERE task = 'nobody-runs-this'`);
    const text = await eventually(async () => {
      const t = await scrape();
      return sample(t, 'grapevine_queue_depth', { queue: 'reports' }) === 2 &&
        sample(t, 'grapevine_queue_scheduled', { queue: 'later' }) === 1
        ? t
        : undefined;
    }, 'the queue measurement');
    expect(sample(text, 'grapevine_queue_oldest_pending_age_seconds', { queue: 'reports' })).toBeGreaterThanOrEqual(60);
    expect(sample(text, 'grapevine_queue_depth', { queue: 'later' })).toBe(0);
    expect(sample(text, 'grapevine_queue_stats_age_seconds')).toBeGreaterThanOrEqual(0);
    // One row per queue, written by whichever supervisor led the chore.
    const { rows } = await db.pool.query(`SELECT queue FROM "${db.schema}".queue_stats ORDER BY queue`);
    expect(rows.map((r) => r.queue)).toEqual(['later', 'reports']);
  });

  it('answers the probes, and 404 for any other path', async () => {
    const health = await fetch(`${base}/healthz`);
    expect(health.status).toBe(200);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ connected: true, listening: true, threadsUp: true, running: true });
    expect((await fetch(`${base}/`)).status).toBe(404);
    expect((await fetch(`${base}/metrics/extra`)).status).toBe(404);
  });

  it('while a job runs: a busy thread, a running job, and the queue measurement counts it; then each way a job can end', async () => {
    const running = await client.addJob('hang', { cooperative: true }, { queue: 'slow' });
    const during = await eventually(async () => {
      const t = await scrape();
      return sample(t, 'grapevine_jobs_running') === 1 && sample(t, 'grapevine_queue_running', { queue: 'slow' }) === 1 ? t : undefined;
    }, 'the running job in the metrics');
    expect(sample(during, 'grapevine_threads_busy')).toBe(1);
    await client.cancelJob(running);
    expect((await client.waitForJob(running)).state).toBe('cancelled');
    const timedOut = await client.addJob('hang', { cooperative: true }, { timeoutMs: 50, maxAttempts: 1 });
    expect((await client.waitForJob(timedOut)).state).toBe('failed');
    // A thread that exits mid-job: its execution is lost, the thread replaced, the retry succeeds.
    const crashed = await client.addJob('exit', { crashes: 1 });
    expect((await client.waitForJob(crashed)).state).toBe('succeeded');
    const after = await eventually(async () => {
      const t = await scrape();
      return sample(t, 'grapevine_jobs_total', { outcome: 'cancelled', task: 'hang', queue: 'slow' }) === 1 &&
        sample(t, 'grapevine_jobs_total', { outcome: 'timeout', task: 'hang', queue: 'default' }) === 1 &&
        sample(t, 'grapevine_jobs_total', { outcome: 'lost', task: 'exit', queue: 'default' }) === 1 &&
        sample(t, 'grapevine_jobs_total', { outcome: 'succeeded', task: 'exit', queue: 'default' }) === 1 &&
        sample(t, 'grapevine_thread_restarts_total') === 1 &&
        sample(t, 'grapevine_threads') === 2
        ? t
        : undefined;
    }, 'every outcome and the restart in the metrics');
    expect(sample(after, 'grapevine_jobs_running')).toBe(0);
    expect(sample(after, 'grapevine_threads_busy')).toBe(0);
  });

  it('is not ready while the LISTEN connection is down, and ready again once it is back', async () => {
    await db.pool.query(`ALTER ROLE "${role}" CONNECTION LIMIT 0`);
    try {
      await db.pool.query('SELECT pg_terminate_backend($1)', [sup.listenerPid()]);
      const down = await eventually(async () => {
        const res = await fetch(`${base}/readyz`);
        return res.status === 503 ? res.json() : undefined;
      }, '/readyz to fail');
      expect(down).toMatchObject({ listening: false, threadsUp: true });
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
    } finally {
      await db.pool.query(`ALTER ROLE "${role}" CONNECTION LIMIT -1`);
    }
    await eventually(async () => (await fetch(`${base}/readyz`)).status === 200, '/readyz to recover');
    expect(sample(await scrape(), 'grapevine_listener_reconnects_total')).toBe(1);
  });

  it('is not ready while the supervisor stops, still healthy, and closed once it has stopped', async () => {
    await db.pool.query(`CREATE TABLE "${db.schema}".gate (open boolean NOT NULL)`);
    await db.pool.query(`INSERT INTO "${db.schema}".gate VALUES (false)`);
    await db.pool.query(`GRANT SELECT ON "${db.schema}".gate TO "${role}"`);
    const held = await client.addJob('block', { gate: `"${db.schema}".gate` });
    await eventually(async () => sample(await scrape(), 'grapevine_jobs_running') === 1, 'the job running');
    // The stop waits for the running job (its grace), which the gate holds.
    const stopping = sup.stop({ graceMs: 60_000 });
    const notReady = await eventually(async () => {
      const res = await fetch(`${base}/readyz`);
      return res.status === 503 ? res.json() : undefined;
    }, '/readyz to fail while stopping');
    expect(notReady).toMatchObject({ running: false });
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    await db.pool.query(`UPDATE "${db.schema}".gate SET open = true`);
    await stopping;
    expect((await client.getJob(held))?.state).toBe('succeeded');
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
  });
});

describe('without a metrics port', () => {
  it('serves nothing, and the leader never measures the queues', async () => {
    await db.pool.query(`DELETE FROM "${db.schema}".queue_stats`);
    const plain = await startTestSupervisor({ ...db, url }, { threads: 1 });
    try {
      expect(plain.metricsAddress()).toBeNull();
      expect((await plain.reapNow()).leader).toBe(true);
      expect((await plain.reapNow()).leader).toBe(true);
      const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM "${db.schema}".queue_stats`);
      expect(rows[0].n).toBe(0);
    } finally {
      await plain.stop({ graceMs: 0 });
    }
  });
});
