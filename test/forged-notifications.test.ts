import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Supervisor } from '../supervisor/public.ts';
import { eventually, jobStates, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';
import { useOwnRole } from './helpers/role.ts';

/**
 * PostgreSQL lets any role that can connect NOTIFY any channel, so every
 * notification grapevine hears is a hint to look at the table, never a
 * command. A role with no right on the schema forges payloads on each of
 * grapevine's channels while a job runs: nothing may change but counters.
 */
const db = useMigratedSchema('forged');
const forger = useOwnRole(db, 'forger', { superuser: false });
let supervisor: Supervisor;
let forgerClient: pg.Client;

beforeAll(async () => {
  await db.pool.query(`CREATE TABLE ${db.s}.gate (open boolean NOT NULL)`);
  await db.pool.query(`INSERT INTO ${db.s}.gate VALUES (false)`);
  supervisor = await startTestSupervisor(db, { threads: 1, killGraceMs: 200 });
  forgerClient = new pg.Client({ connectionString: forger.url });
  await forgerClient.connect();
});
afterAll(async () => {
  await forgerClient?.end().catch(() => {});
  await supervisor?.stop({ graceMs: 0 });
});

async function forge(channel: string, payload: string): Promise<void> {
  await forgerClient.query('SELECT pg_notify($1, $2)', [`${db.schema}_${channel}`, payload]);
}

describe('notifications forged by a role with no rights on the schema', () => {
  it('cannot cancel a running job, kill its thread, or move any job', async () => {
    const done = await db.client.addJob('square', { n: 3 });
    await db.client.waitForJob(done);
    const later = await db.client.addJob('square', { n: 4 }, { runAt: new Date(Date.now() + 3_600_000) });
    const id = await db.client.addJob('block', { gate: `${db.s}.gate` });
    await eventually(async () => (await db.client.getJob(id))?.state === 'running', 'the blocked job to run');
    const before = await jobStates(db);

    // The exact payload a real cancel sends, naming the job and its owner.
    for (let i = 0; i < 3; i++) await forge('control', JSON.stringify({ type: 'cancel', job: id, to: supervisor.id }));
    await forge('control', JSON.stringify({ type: 'cancel', job: done, to: supervisor.id }));
    await forge('control', JSON.stringify({ type: 'message', to: [supervisor.id] }));
    await forge('control', '{"type":"cancel"');
    // Ids of a finished job, a job not yet due, the running one, and ones that do not exist.
    await forge('jobs', `${done},${later},${id},900000000-900000999`);
    await forge('jobs', 'at:0');
    await forge('jobs', 'not a payload');
    await forge('done', `${id},${later}`);
    await forge('responses', '1-100');
    await forge('log', supervisor.id);

    await eventually(() => supervisor.status().counters.ignoredCancels >= 3, 'the three forged cancels to be checked against the row');
    expect(await jobStates(db)).toEqual(before);
    expect((await db.client.getJob(id))?.state).toBe('running');
    expect((await db.client.getJob(later))?.state).toBe('pending');

    await db.pool.query(`UPDATE ${db.s}.gate SET open = true`);
    const job = await db.client.waitForJob(id);
    expect(job).toMatchObject({ state: 'succeeded', attempts: 1, result: { released: true } });
    expect(supervisor.status().restarts).toBe(0);
  });

  it('still lets a real cancel through: the row asks for it', async () => {
    await db.pool.query(`UPDATE ${db.s}.gate SET open = false`);
    const id = await db.client.addJob('block', { gate: `${db.s}.gate` });
    await eventually(async () => (await db.client.getJob(id))?.state === 'running', 'the blocked job to run');
    expect(await db.client.cancelJob(id)).toEqual({ state: 'cancelling' });
    expect((await db.client.waitForJob(id)).state).toBe('cancelled');
  });
});
