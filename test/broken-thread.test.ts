import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';
import { capturingLogger } from './helpers/logs.ts';

const db = useMigratedSchema('broken_thread');
const { client } = db;
const TASKS = path.resolve(import.meta.dirname, 'fixtures/load-switch.mjs');

describe('a replacement thread that cannot import the task modules', () => {
  it('gets no more work and is replaced until a thread loads them; the job waiting meanwhile runs then, with no attempt charged', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'grapevine-load-switch-'));
    const loadSwitch = path.join(dir, 'switch');
    await writeFile(loadSwitch, 'load');
    // Worker threads copy the environment when they start.
    process.env.GRAPEVINE_TEST_LOAD_SWITCH = loadSwitch;
    const captured = capturingLogger('warn');
    // One thread: the broken replacement is the only one there is, so no
    // other thread can run the job behind its back.
    const supervisor = await startTestSupervisor(db, {
      tasks: TASKS,
      threads: 1,
      concurrency: 4,
      leaseMs: 60_000,
      sweepIntervalMs: 200,
      shutdownGraceMs: 0,
      logger: captured.logger,
    });
    try {
      // The running thread keeps the module it has; threads started from now on fail to import it.
      await writeFile(loadSwitch, 'refuse');
      const crash = await client.addJob('exitThread', {}, { maxAttempts: 1 });
      expect(await client.waitForJob(crash, { timeoutMs: 30_000 })).toMatchObject({ state: 'failed' });

      const job = await client.addJob('echo', { n: 1 });
      await eventually(
        () => (supervisor.status().counters.brokenThreads >= 1 ? true : null),
        'the replacement to report that it cannot load the tasks',
      );
      // It claimed nothing: no attempt was spent on a thread that cannot run the job.
      expect(await client.getJob(job)).toMatchObject({ state: 'pending', attempts: 0 });

      await writeFile(loadSwitch, 'load');
      expect(await client.waitForJob(job, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', attempts: 1, result: { n: 1 } });
      const status = supervisor.status();
      expect(status.threads).toHaveLength(1);
      // Every replacement but the last was broken, and each was reported once, however many batches it answered.
      expect(status.counters.brokenThreads).toBe(status.restarts - 1);
    } finally {
      await supervisor.stop({ graceMs: 0 });
      delete process.env.GRAPEVINE_TEST_LOAD_SWITCH;
      await rm(dir, { recursive: true, force: true });
    }
    const warning = captured.lines().find((l) => l.msg === 'a thread could not load the task modules; replacing it');
    expect(warning?.err).toMatch(/import refused by the test switch \(it says "refuse"\)/);
  });
});
