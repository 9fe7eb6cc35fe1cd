import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEmbeddedDatabase, type EmbeddedDatabase } from '../../src/embedded.ts';
import { stopAndExplain } from '../helpers/process.ts';
import { createTestQueue, type SupervisorProcess, type TestQueue } from '../../supervisor/testing.ts';

const TASKS = new URL('./tasks', import.meta.url).pathname;
const JOBS = 3_000;
const DIR = '.grapevine/chaos-db';

// Short timings so recovery happens within the suite's budget; the bounds
// checked below are stated in terms of these.
const SUPERVISOR = {
  tasks: TASKS,
  threads: 2,
  concurrency: 4,
  heartbeatIntervalMs: 200,
  leaseMs: 2_000,
  reaperIntervalMs: 250,
  sweepIntervalMs: 500,
  killGraceMs: 500,
  retryBaseMs: 50,
};

let db: EmbeddedDatabase;
let queue: TestQueue;

beforeAll(async () => {
  db = await startEmbeddedDatabase({ dir: DIR, database: 'chaos' });
  queue = await createTestQueue({ connectionString: db.connectionString });
});

afterAll(async () => {
  await queue?.close();
  await db?.stop();
});

async function restartDatabase(): Promise<void> {
  const port = db.port;
  await db.stop();
  db = await startEmbeddedDatabase({ dir: DIR, database: 'chaos', port });
  // Recorded once it is back: the restart explains re-runs of executions begun before now.
  await queue.recordFault('database-restarted');
}

describe('chaos', () => {
  it('every job ends exactly once through thread kills, a SIGKILLed supervisor, LISTEN cuts and a PostgreSQL restart', async () => {
    const supervisors: SupervisorProcess[] = [await queue.spawnSupervisor(SUPERVISOR), await queue.spawnSupervisor(SUPERVISOR)];
    await queue.client.addJobs(Array.from({ length: JOBS }, (_, i) => ({ task: 'chaos-work', payload: { ms: i % 5 }, maxAttempts: 25 })));

    for (let step = 0; step < 40; step++) {
      await new Promise((r) => setTimeout(r, 150));
      supervisors[step % supervisors.length].killThread();
      if (step % 5 === 2) await queue.killListeners();
      if (step === 8) {
        await supervisors[0].kill();
      }
      if (step === 12) supervisors[0] = await queue.spawnSupervisor(SUPERVISOR);
      if (step === 18) {
        await restartDatabase();
      }
    }

    await queue.waitUntilDone({ timeoutMs: 120_000 });
    const result = await queue.check();
    const faults = await queue.faults();
    console.log(
      `[chaos] ${result.jobs} jobs, ${result.executions} executions, ${result.duplicates} duplicates (all explained: ${result.unexplainedDuplicates.length === 0}); ` +
        `faults: ${faults.length} (${[...new Set(faults.map((f) => f.kind))].join(', ')})`,
    );
    expect(result.unfinished).toEqual([]);
    expect(result.finishedTwice).toEqual([]);
    expect(result.unexplainedDuplicates).toEqual([]);
    expect(result.jobs).toBe(JOBS);
    expect(await queue.states()).toEqual({ succeeded: JOBS });
    for (const s of supervisors) expect(await stopAndExplain(s)).toBe('');
  });
});
