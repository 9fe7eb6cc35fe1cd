import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { createTestQueue, type TestQueue } from '../supervisor/testing.ts';
import { databaseUrl, eventually } from './helpers/db.ts';
import { RECORDED_TASKS } from './helpers/queue.ts';

const pool = new pg.Pool({ connectionString: databaseUrl(), max: 2 });
const queues: TestQueue[] = [];
afterAll(async () => {
  for (const q of queues) await q.close();
  await pool.end();
});

async function alive(pid: number): Promise<boolean> {
  return (await pool.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).rowCount === 1;
}

describe('grapevine-jobs/testing', () => {
  // Test files run in parallel against one server, each with a queue of its own.
  it("killListeners() cuts the LISTEN connections of its own queue's supervisors and no one else's", async () => {
    const mine = await createTestQueue({ connectionString: databaseUrl() });
    const theirs = await createTestQueue({ connectionString: databaseUrl() });
    queues.push(mine, theirs);
    const a = await mine.startSupervisor({ tasks: RECORDED_TASKS, threads: 1 });
    const b = await mine.startSupervisor({ tasks: RECORDED_TASKS, threads: 1 });
    const other = await theirs.startSupervisor({ tasks: RECORDED_TASKS, threads: 1 });
    const before = [a.listenerPid()!, b.listenerPid()!, other.listenerPid()!];
    expect(before.every((pid) => typeof pid === 'number')).toBe(true);

    expect(await mine.killListeners()).toBe(2);
    expect(await alive(before[2])).toBe(true);
    expect(other.listenerPid()).toBe(before[2]);
    // Its own supervisors reconnect, and a job still runs through them.
    await eventually(
      () => [a, b].every((s, i) => s.listenerPid() !== null && s.listenerPid() !== before[i]),
      'both LISTEN connections to come back',
    );
    const [id] = await mine.client.addJobs([{ task: 'recorded', payload: { n: 1 } }]);
    expect(await mine.client.waitForJob(id, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded' });
    expect((await mine.faults()).map((f) => f.kind)).toEqual(['listener-killed']);
  });
});
