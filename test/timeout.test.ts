import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createClient, startSupervisor, type Supervisor } from '../supervisor/public.ts';
import { silentLogger } from '../src/log.ts';
import { eventually, FIXTURE_TASKS, useTestSchema } from './helpers/db.ts';

const db = useTestSchema('timeout');
const client = createClient({ connectionString: db.url, schema: db.schema });
const supervisors: Supervisor[] = [];
// Each test's supervisor is the only one running its jobs: what a test reads
// from its status (restarts, threads) is about those jobs, and no idle
// supervisor of an earlier test competes for the CPU.
afterEach(async () => {
  await Promise.all(supervisors.splice(0).map((s) => s.stop({ graceMs: 0 })));
});
afterAll(() => client.close());

async function supervisor(tasks = FIXTURE_TASKS, threads = 2): Promise<Supervisor> {
  const s = await startSupervisor({
    connectionString: db.url,
    schema: db.schema,
    tasks,
    threads,
    concurrency: 2,
    killGraceMs: 200,
    retryBaseMs: 20,
    leaseMs: 60_000, // recovery below must not come from lease expiry
    logger: silentLogger(),
  });
  supervisors.push(s);
  return s;
}

describe('hard timeouts', () => {
  it('terminates the thread of a CPU-bound handler that overruns its timeout, and retries the job on a fresh thread', async () => {
    const sup = await supervisor();
    const id = await client.addJob('spin-once', {}, { timeoutMs: 300 });
    const job = await client.waitForJob(id);
    expect(job.state).toBe('succeeded');
    expect(job.attempts).toBe(2);
    expect(job.result).toEqual({ attempt: 2 });
    expect(job.lastError).toMatch(/job timed out after 300 ms; its thread was terminated because the handler did not stop/);
    await eventually(() => sup.status().restarts >= 1 && sup.status().threads.length === 2, 'a replacement thread');
  });

  it('aborts a handler that honours its AbortSignal without killing the thread, and counts the attempt', async () => {
    const sup = await supervisor();
    const restarts = sup.status().restarts;
    const id = await client.addJob('hang', { cooperative: true, succeedFrom: 2 }, { timeoutMs: 300 });
    const job = await client.waitForJob(id);
    expect(job).toMatchObject({ state: 'succeeded', attempts: 2 });
    expect(job.lastError).toMatch(/AbortError: job timed out after 300 ms/);
    expect(sup.status().restarts).toBe(restarts);
  });

  it('fails a hung job at its last attempt and leaves no database connection of the killed thread behind', async () => {
    const sup = await supervisor();
    const id = await client.addJob('hang', {}, { timeoutMs: 300, maxAttempts: 1 });
    const job = await client.waitForJob(id);
    expect(job.state).toBe('failed');
    expect(job.lastError).toMatch(/timed out after 300 ms/);
    const killedThread = job.lockedThread!;
    await eventually(async () => {
      const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name IN ($1, $2)`, [
        `grapevine-thread-${killedThread}`,
        `grapevine-handler-${killedThread}`,
      ]);
      return rows[0].n === 0;
    }, 'the killed thread’s connections to close');
    expect(sup.status().threads.map((t) => t.threadId)).not.toContain(killedThread);
  });

  it('applies a timeout exported by the task module to every job of that task', async () => {
    await supervisor(path.resolve(FIXTURE_TASKS, '../timeout-tasks'), 1);
    const id = await client.addJob('slow', {}, { maxAttempts: 1 });
    const job = await client.waitForJob(id);
    expect(job.state).toBe('failed');
    expect(job.lastError).toMatch(/timed out after 200 ms/);
  });

  it('starts the clock when the handler starts, not when the job was enqueued or dispatched', async () => {
    // A job that waited in the queue far longer than its timeout still gets its full time once it runs.
    const gate = `"${db.schema}".gate_clock`;
    await db.pool.query(`CREATE TABLE ${gate} (open boolean)`);
    await supervisor(FIXTURE_TASKS, 1);
    const blocker = await client.addJob('block', { gate });
    const waited = await client.addJob('noop', {}, { timeoutMs: 250, maxAttempts: 1 });
    await eventually(async () => (await client.getJob(blocker))?.state === 'running', 'the blocker to run');
    // Let the queued job wait past its timeout before anything runs it.
    await new Promise((r) => setTimeout(r, 400));
    await db.pool.query(`INSERT INTO ${gate} VALUES (true)`);
    expect((await client.waitForJob(waited)).state).toBe('succeeded');
    expect((await client.waitForJob(blocker)).state).toBe('succeeded');
  });
});
