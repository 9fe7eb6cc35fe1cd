// A job whose task (or queue) no live supervisor handles is claimed by
// nobody and stays pending for good. Each supervisor knows only its own
// tasks, so only the fleet's view can tell: the reaper's leader compares the
// oldest due jobs with the tasks and queues in the supervisors table, once a
// minute, and warns.
import { afterEach, describe, expect, it } from 'vitest';
import type { Supervisor } from '../supervisor/public.ts';
import { Maintenance, type ReapResult } from '../supervisor/maintenance/leader.ts';
import { eventually, startTestSupervisor, testLogger, useMigratedSchema } from './helpers/db.ts';
import { capturingLogger } from './helpers/logs.ts';

const db = useMigratedSchema('unhandled');
const { client, s } = db;
const started: Supervisor[] = [];

afterEach(async () => {
  for (const sup of started.splice(0)) await sup.stop({ graceMs: 0 });
});

/**
 * Runs the once-a-minute chores now, with a reaper of the test's own: the
 * fleet runs them at most once per 30 s, so the record of the last run is
 * removed first. The supervisors' own reapers do not tick during the tests
 * (reaperIntervalMs below), so this one leads.
 */
async function lookNow(logger = testLogger()): Promise<ReapResult> {
  await db.pool.query(`DELETE FROM ${s}.maintenance`);
  const reaper = new Maintenance({ pool: db.pool, schema: db.schema, leaseMs: 10_000, intervalMs: 1_000, retentionMs: 60_000, logger });
  const result = await reaper.tick();
  expect(result).toMatchObject({ leader: true, choresRan: true });
  return result;
}

const NO_OWN_REAPING = { reaperIntervalMs: 3_600_000 };

describe('jobs that no running supervisor handles', { timeout: 60_000 }, () => {
  it('are named by the reaper, with their queue and how many wait; handled ones are not', async () => {
    const sup = await startTestSupervisor(db, { threads: 1, queues: ['default', 'mail'], ...NO_OWN_REAPING });
    started.push(sup);
    const typo = await db.pool.query(`SELECT ${s}.add_job('nooop') AS id`);
    await db.pool.query(`SELECT ${s}.add_job('nooop')`);
    // A known task in a queue this supervisor does not serve.
    await client.addJob('noop', {}, { queue: 'reports' });
    // Not due yet: nothing could run it now anyway.
    await client.addJob('no_such_task_later', {}, { runAt: new Date(Date.now() + 3_600_000) });
    // Handled: it runs.
    const handled = await client.addJob('noop', {}, { queue: 'mail' });
    expect((await client.waitForJob(handled)).state).toBe('succeeded');

    const log = capturingLogger('warn');
    const result = await lookNow(log.logger);
    expect(result.unhandled).toEqual([
      { task: 'nooop', queue: 'default', jobs: 2, schedules: [] },
      { task: 'noop', queue: 'reports', jobs: 1, schedules: [] },
    ]);
    const warning = log
      .lines()
      .find((l) => String(l.msg).startsWith('due jobs (or schedules) wait for tasks (or queues) that no running supervisor handles'));
    expect(warning?.unhandled).toEqual(result.unhandled);
    expect((await client.getJob(typo.rows[0].id))?.state).toBe('pending');
  });

  it('counts a supervisor only while it is live, and says nothing once every due job has one', async () => {
    // The jobs of the test above are still there; a supervisor of every queue now takes the 'reports' job.
    const sup = await startTestSupervisor(db, { threads: 1, ...NO_OWN_REAPING });
    started.push(sup);
    await eventually(async () => {
      const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM ${s}.jobs WHERE queue = 'reports' AND state = 'succeeded'`);
      return rows[0].n === 1;
    }, 'the reports job to run');
    expect((await lookNow()).unhandled).toEqual([{ task: 'nooop', queue: 'default', jobs: 2, schedules: [] }]);

    await db.pool.query(`DELETE FROM ${s}.jobs WHERE task = 'nooop'`);
    const log = capturingLogger('warn');
    expect((await lookNow(log.logger)).unhandled).toEqual([]);
    expect(log.text()).not.toContain('no running supervisor handles');

    // Once the only supervisor has stopped, nothing handles 'noop' either.
    for (const s2 of started.splice(0)) await s2.stop({ graceMs: 0 });
    await client.addJob('noop', {});
    expect((await lookNow()).unhandled).toEqual([{ task: 'noop', queue: 'default', jobs: 1, schedules: [] }]);
  });
});
