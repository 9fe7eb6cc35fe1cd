import { afterAll, describe, expect, it } from 'vitest';
import { createClient, startSupervisor, type Supervisor } from '../supervisor/public.ts';
import { silentLogger } from '../src/log.ts';
import { createTestQueue } from '../supervisor/testing.ts';
import { eventually, FIXTURE_TASKS, useTestSchema } from './helpers/db.ts';

const db = useTestSchema('cancel');
const client = createClient({ connectionString: db.url, schema: db.schema });
let sup: Supervisor;
afterAll(async () => {
  await sup?.stop({ graceMs: 0 });
  await client.close();
});

async function running(id: string): Promise<void> {
  await eventually(async () => (await client.getJob(id))?.state === 'running', `job ${id} to run`);
}

describe('cancelJob', () => {
  it('cancels a pending job on the spot so it never runs', async () => {
    const id = await client.addJob('square', { n: 1 }, { runAt: new Date(Date.now() + 3_600_000) });
    expect(await client.cancelJob(id)).toEqual({ state: 'cancelled' });
    const job = await client.getJob(id);
    expect(job).toMatchObject({ state: 'cancelled', attempts: 0 });
    expect(job!.finishedAt).not.toBeNull();
    expect((await client.waitForJob(id)).state).toBe('cancelled');
  });

  it('aborts a running handler through its AbortSignal; the thread survives', async () => {
    sup = await startSupervisor({
      connectionString: db.url,
      schema: db.schema,
      tasks: FIXTURE_TASKS,
      threads: 2,
      killGraceMs: 300,
      logger: silentLogger(),
    });
    const id = await client.addJob('hang', { cooperative: true });
    await running(id);
    expect(await client.cancelJob(id)).toEqual({ state: 'cancelling' });
    const job = await client.waitForJob(id);
    expect(job.state).toBe('cancelled');
    expect(job.lastError).toMatch(/job was cancelled/);
    expect(sup.status().restarts).toBe(0);
  });

  it('terminates the thread of a handler that ignores the cancellation; the job still ends cancelled', async () => {
    const id = await client.addJob('spin', {});
    await running(id);
    await client.cancelJob(id);
    const job = await client.waitForJob(id);
    expect(job.state).toBe('cancelled');
    expect(job.lastError).toMatch(/job was cancelled; its thread was terminated/);
    await eventually(() => sup.status().restarts >= 1 && sup.status().threads.length === 2, 'a replacement thread');
  });

  it('applies a cancellation whose notification the supervisor never heard, at its next heartbeat', async () => {
    const id = await client.addJob('hang', { cooperative: true });
    await running(id);
    // The flag alone, as if the cancel notification had been lost with the LISTEN connection.
    await db.pool.query(`UPDATE "${db.schema}".jobs SET cancel_requested_at = now() WHERE id = $1`, [id]);
    const job = await client.waitForJob(id);
    expect(job.state).toBe('cancelled');
    expect(job.lastError).toMatch(/job was cancelled/);
  });

  it('leaves a finished job as it was', async () => {
    const id = await client.addJob('square', { n: 4 });
    await client.waitForJob(id);
    expect(await client.cancelJob(id)).toEqual({ state: 'succeeded' });
    expect((await client.getJob(id))!.state).toBe('succeeded');
  });

  it('cancels a job running in another process, on whichever host runs it', async () => {
    const queue = await createTestQueue({ connectionString: db.url });
    try {
      await queue.spawnSupervisor({ tasks: FIXTURE_TASKS, threads: 1, killGraceMs: 300 });
      const id = await queue.client.addJob('spin', {});
      await eventually(async () => (await queue.client.getJob(id))?.state === 'running', 'the job to run in the child');
      await queue.client.cancelJob(id);
      expect((await queue.client.waitForJob(id)).state).toBe('cancelled');
    } finally {
      await queue.close();
    }
  });
});
