import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedDatabase, type EmbeddedDatabase } from '../../src/embedded.ts';
import { createTestQueue, type TestQueue } from '../../supervisor/testing.ts';
import { stopAndExplain } from '../helpers/process.ts';

// PostgreSQL going away under running supervisors: they must recover without
// being restarted, and no committed job may be lost. This file owns its
// server so it can stop and kill it.
const TASKS = new URL('./tasks', import.meta.url).pathname;
const DIR = '.grapevine/chaos-db-restart';
const SUPERVISOR = {
  tasks: TASKS,
  threads: 2,
  concurrency: 4,
  heartbeatIntervalMs: 200,
  leaseMs: 3_000,
  reaperIntervalMs: 250,
  sweepIntervalMs: 500,
  listenerHealthCheckMs: 500,
};

let db: EmbeddedDatabase;
let queue: TestQueue;

beforeAll(async () => {
  db = await startEmbeddedDatabase({ dir: DIR, database: 'restart' });
  queue = await createTestQueue({ connectionString: db.connectionString });
});
afterAll(async () => {
  await queue?.close();
  await db?.stop();
});

async function postmasterPid(): Promise<number> {
  const state = JSON.parse(await readFile(path.join(DIR, 'server.json'), 'utf8')) as { postmasterPid: number };
  return state.postmasterPid;
}

async function gone(pid: number): Promise<void> {
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Starts the server again and records the restart: it explains any re-run of an execution begun before now. */
async function bringBack(): Promise<void> {
  db = await startEmbeddedDatabase({ dir: DIR, database: 'restart', port: db.port });
  await queue.recordFault('database-restarted');
}

describe('PostgreSQL restarts and crashes', () => {
  it('recovers from a fast restart mid-run without restarting supervisors, losing no committed job', async () => {
    const a = await queue.spawnSupervisor(SUPERVISOR);
    const b = await queue.spawnSupervisor(SUPERVISOR);
    await queue.client.addJobs(Array.from({ length: 1_000 }, (_, i) => ({ task: 'chaos-work', payload: { ms: i % 3 }, maxAttempts: 25 })));
    await db.stop(); // fast shutdown: sessions are terminated, committed data kept
    await bringBack();
    // Jobs committed while the supervisors were still reconnecting must be found too.
    await queue.client.addJobs(Array.from({ length: 200 }, () => ({ task: 'chaos-work', payload: { ms: 0 }, maxAttempts: 25 })));
    await queue.waitUntilDone();
    const result = await queue.check();
    expect(result).toMatchObject({ jobs: 1_200, unfinished: [], finishedTwice: [], unexplainedDuplicates: [] });
    expect(await queue.states()).toEqual({ succeeded: 1_200 });
    // The same processes did the work after the restart.
    expect(await stopAndExplain(a)).toBe('');
    expect(await stopAndExplain(b)).toBe('');
  });

  it('recovers from a crash (immediate shutdown, notifications lost) and finds every committed job by re-reading the table', async () => {
    const a = await queue.spawnSupervisor(SUPERVISOR);
    await queue.client.addJobs(Array.from({ length: 500 }, () => ({ task: 'chaos-work', payload: { ms: 1 }, maxAttempts: 25 })));
    const pid = await postmasterPid();
    process.kill(pid, 'SIGQUIT'); // immediate shutdown: like a crash, recovery on start
    await gone(pid);
    await bringBack();
    await queue.waitUntilDone();
    const result = await queue.check();
    expect(result).toMatchObject({ unfinished: [], finishedTwice: [], unexplainedDuplicates: [] });
    expect((await queue.states()).succeeded).toBe(1_700);
    expect(await stopAndExplain(a)).toBe('');
  });
});
