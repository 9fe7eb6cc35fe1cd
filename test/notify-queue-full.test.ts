// PostgreSQL's NOTIFY queue is shared by the server and freed only when every
// listening session has read it. A listener left idle in a transaction holds
// it; once it is full, every transaction that sent a NOTIFY failed at COMMIT,
// which made every enqueue fail. The queue is 8 GB on PostgreSQL 15; from 17
// on its size is a server setting, so this file starts its own embedded
// server (PostgreSQL 18) with the smallest queue allowed, 64 pages (512 kB).
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, createControl, startSupervisor, type Client, type Supervisor } from '../supervisor/public.ts';
import { channelsFor } from '../src/schema/channels.ts';
import { startEmbeddedDatabase, type EmbeddedDatabase } from '../src/embedded.ts';
import { eventually, FIXTURE_TASKS, schemaName } from './helpers/db.ts';
import { capturingLogger } from './helpers/logs.ts';

const dir = fileURLToPath(new URL(`../.grapevine/test-notify-queue-${randomBytes(4).toString('hex')}`, import.meta.url));

describe('a full NOTIFY queue', { timeout: 120_000 }, () => {
  let server: EmbeddedDatabase;
  let client: Client;
  let supervisor: Supervisor | undefined;
  const holder = () => new pg.Client({ connectionString: server.connectionString });
  const sessions: pg.Client[] = [];
  const schema = schemaName('notify_full');

  beforeAll(async () => {
    server = await startEmbeddedDatabase({ dir: path.resolve(dir), settings: { max_notify_queue_pages: 64 } });
    client = createClient({ connectionString: server.connectionString, schema });
    await client.migrate();
  });

  afterAll(async () => {
    await supervisor?.stop({ graceMs: 0 });
    await client?.close();
    for (const s of sessions) await s.end().catch(() => {});
    await server?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('neither fails an enqueue nor stops its job from running, and the supervisor says why jobs wait for the sweep', async () => {
    // A listener stuck inside a transaction: it reads no notification, so none is freed.
    const stuck = holder();
    sessions.push(stuck);
    await stuck.connect();
    await stuck.query('LISTEN grapevine_test_stuck');
    await stuck.query('BEGIN');
    await stuck.query('SELECT 1');

    // Fill the queue until PostgreSQL refuses another notification.
    const filler = holder();
    sessions.push(filler);
    await filler.connect();
    let refused: Error | undefined;
    for (let i = 0; i < 1000 && !refused; i++) {
      await filler.query(`SELECT pg_notify('grapevine_test_filler', repeat('x', 7900))`).catch((err: Error) => {
        refused = err;
      });
    }
    expect(refused?.message).toMatch(/too many notifications in the NOTIFY queue/);

    // Before notify() dropped notifications from a half-full queue, each of these failed at COMMIT with the error above.
    const early = await client.addJob('noop', {});
    const bulk = await client.addJobs([
      { task: 'noop', payload: {} },
      { task: 'noop', payload: {} },
    ]);
    await client.addJob('noop', {}, { runAt: new Date(Date.now() + 60 * 60_000) });

    const log = capturingLogger('warn');
    supervisor = await startSupervisor({
      connectionString: server.connectionString,
      schema,
      tasks: FIXTURE_TASKS,
      logger: log.logger,
      threads: 1,
      sweepIntervalMs: 200,
      heartbeatIntervalMs: 200,
    });
    for (const id of [early, ...bulk]) {
      const job = await client.waitForJob(id, { timeoutMs: 30_000 });
      expect(job.state).toBe('succeeded');
    }
    // Due in a few seconds: the wait reads it while it is still pending, and no
    // notification will say that it ran; the sweep finds it, and the wait
    // re-reads it at a health check of its LISTEN connection.
    const late = await client.addJob('noop', {}, { runAt: new Date(Date.now() + 3_000) });
    const lateRan = client.waitForJob(late, { timeoutMs: 30_000 });
    expect((await client.getJob(late))?.state).toBe('pending');
    expect((await lateRan).state).toBe('succeeded');

    // The control plane: the message and its response go unannounced, and are found all the same.
    const control = createControl({ connectionString: server.connectionString, schema });
    try {
      const answers = await control.sendAndWait('PING', undefined, { timeoutMs: 30_000 });
      expect(Object.values(answers).map((a) => a.value)).toEqual(['PONG']);
    } finally {
      await control.close();
    }
    // Cancelling a running job notifies its owner too; that must not fail either.
    const held = await client.addJob('hang', {});
    await eventually(async () => (await client.getJob(held))?.state === 'running', 'the hang job to run');
    expect((await client.cancelJob(held)).state).toBe('cancelling');
    await eventually(async () => (await client.getJob(held))?.state === 'cancelled', 'the cancel to reach the job at a heartbeat');

    const warning = await eventually(
      () => log.lines().find((l) => typeof l.msg === 'string' && l.msg.startsWith("PostgreSQL's NOTIFY queue is half full")),
      'the NOTIFY queue warning',
    );
    expect(warning.notifyQueueUsage).toBeGreaterThanOrEqual(0.5);

    // Once the stuck session ends, notifications flow again.
    await stuck.query('ROLLBACK');
    const { rows } = await filler.query('SELECT pg_notification_queue_usage() AS usage');
    expect(Number(rows[0].usage)).toBeLessThan(0.5);
    const heard: string[] = [];
    filler.on('notification', (n) => heard.push(n.payload ?? ''));
    await filler.query(`LISTEN "${channelsFor(schema).jobs}"`);
    const announced = await client.addJob('noop', {});
    await eventually(() => heard.includes(announced), 'the new job to be announced');
  });
});
