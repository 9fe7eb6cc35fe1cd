import { rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Supervisor, SupervisorOptions } from '../supervisor/public.ts';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';

const db = useMigratedSchema('crash');
const { client } = db;

const THREADS = 2;
// Far longer than any wait below: a job that comes back at all came back
// because its thread died, not because its lease ran out.
const LEASE_MS = 60_000;

function start(options: Partial<SupervisorOptions> = {}): Promise<Supervisor> {
  return startTestSupervisor(db, {
    threads: THREADS,
    concurrency: 4,
    leaseMs: LEASE_MS,
    heartbeatIntervalMs: 200,
    reaperIntervalMs: 200,
    sweepIntervalMs: 200,
    shutdownGraceMs: 0,
    ...options,
  });
}

async function withSupervisor(options: Partial<SupervisorOptions>, body: (supervisor: Supervisor) => Promise<void>): Promise<void> {
  const supervisor = await start(options);
  try {
    await body(supervisor);
  } finally {
    await supervisor.stop({ graceMs: 0 });
  }
}

/** A table the `block` fixture polls: its jobs run until open() is called. */
async function createGate(name: string): Promise<{ table: string; open(): Promise<void> }> {
  const table = `"${db.schema}"."gate_${name}"`;
  await db.pool.query(`CREATE TABLE ${table} (open boolean NOT NULL)`);
  await db.pool.query(`INSERT INTO ${table} VALUES (false)`);
  return { table, open: async () => void (await db.pool.query(`UPDATE ${table} SET open = true`)) };
}

async function jobRow(id: string) {
  const { rows } = await db.pool.query(`SELECT * FROM "${db.schema}".jobs WHERE id = $1`, [id]);
  return rows[0];
}

/** Waits until the supervisor has replaced its dead threads. */
function poolRestored(supervisor: Supervisor, threads = THREADS) {
  return eventually(() => {
    const status = supervisor.status();
    return status.threads.length === threads && status.restarts >= 1 ? status : null;
  }, 'the thread pool to be back to full size');
}

describe('a thread that dies mid-job', () => {
  const crashes = [
    {
      how: 'calls process.exit(1)',
      task: 'exit',
      payload: {},
      reason: /^thread crashed: .*exited with code: 1/,
      resourceLimits: undefined,
    },
    {
      how: 'throws from a timer (uncaught exception)',
      task: 'throw-later',
      payload: { message: 'boom from a timer' },
      // With the frames of the thread's stack (the fixture's file among them).
      reason: /^thread crashed: boom from a timer\n\s+at .*throw-later\.mjs/,
      resourceLimits: undefined,
    },
    {
      how: 'leaves a promise rejection unhandled',
      task: 'reject-unhandled',
      payload: { message: 'nobody caught this' },
      reason: /^thread crashed: nobody caught this\n\s+at .*reject-unhandled\.mjs/,
      resourceLimits: undefined,
    },
    {
      how: 'runs out of memory under resourceLimits',
      task: 'oom',
      payload: {},
      reason: /^thread crashed: .*memory.*ERR_WORKER_OUT_OF_MEMORY/,
      resourceLimits: { maxOldGenerationSizeMb: 32 },
    },
  ];

  for (const crash of crashes) {
    it(`releases the job at once when the handler ${crash.how}, counts the attempt, reruns it and replaces the thread`, async () => {
      await withSupervisor({ resourceLimits: crash.resourceLimits }, async (supervisor) => {
        const id = await client.addJob(crash.task, crash.payload, { maxAttempts: 3 });
        // The wait ends long before the lease would: only the crash path can release the job in time.
        const job = await client.waitForJob(id, { timeoutMs: 30_000 });
        expect(job).toMatchObject({ state: 'succeeded', attempts: 2, result: { survived: 2 } });
        expect(job.lastError).toMatch(crash.reason);
        const status = await poolRestored(supervisor);
        expect(status.counters.threadCrashes).toBeGreaterThanOrEqual(1);
      });
    });
  }

  it('fails a job whose thread crashed on its last attempt instead of running it again', async () => {
    await withSupervisor({}, async () => {
      const id = await client.addJob('exit', { crashes: 5 }, { maxAttempts: 1 });
      const job = await client.waitForJob(id, { timeoutMs: 30_000 });
      expect(job).toMatchObject({ state: 'failed', attempts: 1 });
      expect(job.lastError).toMatch(/^thread crashed: .*exited with code: 1/);
    });
  });

  it('gives the job back as soon as its thread starts exiting, without waiting for the thread to be torn down', async () => {
    const releaseFile = path.join(os.tmpdir(), `grapevine-exit-held-${process.pid}-${Date.now()}`);
    try {
      await withSupervisor({ sweepIntervalMs: 600_000 }, async (supervisor) => {
        // Idle first: a pull sent to the thread just before it dies would be
        // stuck there until it is gone, as it would have been before.
        await eventually(() => supervisor.status().inFlight === 0, 'the start-up pulls to end');
        const threadsBefore = supervisor.status().threads.map((t) => t.threadId);
        const id = await client.addJob('exit-held', { releaseFile }, { maxAttempts: 3 });
        // The dead thread stays in its exit listener until releaseFile exists,
        // so piscina cannot report its death before then: the job comes back
        // only because the thread said it was exiting.
        const job = await client.waitForJob(id, { timeoutMs: 30_000 });
        expect(job).toMatchObject({ state: 'succeeded', attempts: 2, result: { survived: 2 } });
        expect(job.lastError).toMatch(/^thread crashed: .*exited with code: 1/);
        // Nothing was sent to the exiting thread after it said so: a batch
        // sent there would hold its slots until the thread is gone, which is
        // never before releaseFile exists. (No sweeps in this test: a pull a
        // sweep sent just before the death would be stuck there.)
        await eventually(() => supervisor.status().inFlight === 0, 'every slot to be free', 10_000);
        const live = supervisor.status().threads.map((t) => t.threadId);
        expect(threadsBefore.every((t) => live.includes(t))).toBe(true);
        await writeFile(releaseFile, '');
        await poolRestored(supervisor);
      });
    } finally {
      await writeFile(releaseFile, '');
      await rm(releaseFile, { force: true });
    }
  });

  it('also releases the other jobs that were running on the dying thread', async () => {
    const gate = await createGate('colocated');
    await withSupervisor({ threads: 1 }, async (supervisor) => {
      const blocked = await client.addJob('block', { gate: gate.table }, { maxAttempts: 3 });
      const firstRun = await eventually(async () => {
        const row = await jobRow(blocked);
        return row.state === 'running' ? row : null;
      }, 'the block job to run');
      // One thread: the crashing job runs beside the blocked one.
      const crashing = await client.addJob('exit', {}, { maxAttempts: 3 });
      expect((await client.waitForJob(crashing, { timeoutMs: 30_000 })).state).toBe('succeeded');

      const rerun = await eventually(async () => {
        const row = await jobRow(blocked);
        return row.state === 'running' && row.attempts === 2 ? row : null;
      }, 'the co-located job to be released and claimed again');
      expect(rerun.locked_thread).not.toBe(firstRun.locked_thread);
      expect(rerun.last_error).toMatch(/^thread crashed: .*exited with code: 1/);

      await gate.open();
      const done = await client.waitForJob(blocked, { timeoutMs: 30_000 });
      expect(done).toMatchObject({ state: 'succeeded', attempts: 2, result: { released: true } });
      await poolRestored(supervisor, 1);
    });
  });

  it('treats killThread() from outside like a crash: the job is released, counted and run again', async () => {
    const gate = await createGate('killed');
    await withSupervisor({}, async (supervisor) => {
      const id = await client.addJob('block', { gate: gate.table }, { maxAttempts: 3 });
      const firstRun = await eventually(async () => {
        const row = await jobRow(id);
        return row.state === 'running' && supervisor.status().threads.some((t) => t.currentJobs.includes(id)) ? row : null;
      }, 'the block job to run');

      expect(supervisor.killThread()).toBe(firstRun.locked_thread);

      const rerun = await eventually(async () => {
        const row = await jobRow(id);
        return row.state === 'running' && row.attempts === 2 ? row : null;
      }, 'the job of the killed thread to be claimed again');
      expect(rerun.last_error).toMatch(/^thread crashed: /);
      expect(rerun.locked_thread).not.toBe(firstRun.locked_thread);

      await gate.open();
      expect(await client.waitForJob(id, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', attempts: 2 });
      await poolRestored(supervisor);
    });
  });
});

describe('a result that cannot be stored as JSON', () => {
  it('fails the job with a message naming the problem and keeps the thread alive', async () => {
    await withSupervisor({}, async (supervisor) => {
      const threadsBefore = supervisor
        .status()
        .threads.map((t) => t.threadId)
        .sort();
      const cases = [
        { kind: 'function', message: /^result is not JSON-serializable: handler returned a function/ },
        { kind: 'bigint', message: /^result is not JSON-serializable: .*BigInt/ },
        { kind: 'circular', message: /^result is not JSON-serializable: .*circular/ },
      ];
      for (const { kind, message } of cases) {
        const id = await client.addJob('unserializable', { kind }, { maxAttempts: 3 });
        const job = await client.waitForJob(id, { timeoutMs: 30_000 });
        // Not retried: the same handler would return the same value again.
        expect(job, kind).toMatchObject({ state: 'failed', attempts: 1, result: null });
        expect(job.lastError, kind).toMatch(message);
      }
      const ok = await client.addJob('square', { n: 9 });
      expect(await client.waitForJob(ok, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', result: { root: 3 } });

      const status = supervisor.status();
      expect(status.restarts).toBe(0);
      expect(status.counters.threadCrashes).toBe(0);
      expect(status.threads.map((t) => t.threadId).sort()).toEqual(threadsBefore);
    });
  });
});

describe('a claim the dying thread never reported', () => {
  it('is released soon after the thread exits, not when its lease runs out', async () => {
    await withSupervisor({}, async (supervisor) => {
      // As if a thread had committed a claim and died before telling the
      // supervisor: the row names a live thread the dispatcher knows nothing about.
      const victim = supervisor.status().threads[0].threadId;
      const id = await client.addJob('square', { n: 25 }, { runAt: new Date(Date.now() + 3_600_000) });
      await db.pool.query(
        `UPDATE "${db.schema}".jobs SET state = 'running', attempts = 1, locked_by = $2, locked_thread = $3,
                claim_token = 1, lease_until = now() + interval '1 hour', run_at = now()
          WHERE id = $1`,
        [id, supervisor.id, victim],
      );
      expect(supervisor.killThread(victim)).toBe(victim);
      const job = await client.waitForJob(id);
      expect(job.state).toBe('succeeded');
      expect(job.attempts).toBe(2);
      expect(job.lastError).toMatch(new RegExp(`thread ${victim} exited \\(code \\d+\\) after claiming this job`));
    });
  });
});

describe('the way back into the queue', () => {
  it('brings a crashed thread’s job back through the release notification, not a later sweep', async () => {
    // With sweeps ten minutes apart, the job can only run again because its
    // release announced it and the supervisor took it.
    await withSupervisor({ sweepIntervalMs: 600_000 }, async () => {
      for (let i = 0; i < 5; i++) {
        const id = await client.addJob('exit', { crashes: 1 });
        const job = await client.waitForJob(id, { timeoutMs: 30_000 });
        expect(job).toMatchObject({ state: 'succeeded', attempts: 2 });
      }
    });
  });
});
