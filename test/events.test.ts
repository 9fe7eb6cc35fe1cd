import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Supervisor, SupervisorEventName, SupervisorEvents } from '../supervisor/public.ts';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';

/** The supervisor's lifecycle events, from real jobs, a real thread crash and a real lost LISTEN connection. */
const db = useMigratedSchema('events');
const S = db.s;
let sup: Supervisor;
const seen: Array<{ name: SupervisorEventName; event: SupervisorEvents[SupervisorEventName] }> = [];
const NAMES: SupervisorEventName[] = [
  'job:started',
  'job:succeeded',
  'job:failed',
  'job:retried',
  'job:cancelled',
  'job:timedOut',
  'thread:crashed',
  'thread:replaced',
  'listen:lost',
  'listen:restored',
];

beforeAll(async () => {
  await db.pool.query(`CREATE TABLE ${S}.gate (open boolean NOT NULL DEFAULT false)`);
  await db.pool.query(`INSERT INTO ${S}.gate VALUES (false)`);
  sup = await startTestSupervisor(db, { threads: 1, retryBaseMs: 10, retryMaxMs: 20, killGraceMs: 100 });
  for (const name of NAMES) sup.on(name, (event) => seen.push({ name, event }));
});
afterAll(() => sup?.stop({ graceMs: 0 }));

const eventsOf = (id: string) => seen.filter((s) => 'id' in s.event && s.event.id === id);
const namesOf = (id: string) => eventsOf(id).map((s) => s.name);

describe('job events', () => {
  it('a success: started, then succeeded with how long the handler ran', async () => {
    const id = await db.client.addJob('square', { n: 9 });
    await db.client.waitForJob(id);
    await eventually(() => namesOf(id).length === 2, 'both events');
    expect(namesOf(id)).toEqual(['job:started', 'job:succeeded']);
    expect(eventsOf(id)[0].event).toEqual({ id, task: 'square', queue: 'default', attempt: 1, threadId: expect.any(Number) });
    expect(eventsOf(id)[1].event).toMatchObject({ id, attempt: 1, durationMs: expect.any(Number) });
  });

  it('a failure with an attempt left is retried, and the last attempt fails for good', async () => {
    const id = await db.client.addJob('fail', { message: 'no luck' }, { maxAttempts: 2 });
    const job = await db.client.waitForJob(id);
    expect(job.state).toBe('failed');
    await eventually(() => namesOf(id).length === 4, 'four events');
    expect(namesOf(id)).toEqual(['job:started', 'job:retried', 'job:started', 'job:failed']);
    expect(eventsOf(id)[1].event).toMatchObject({ attempt: 1, error: expect.stringContaining('no luck') });
    expect(eventsOf(id)[3].event).toMatchObject({ attempt: 2, willRetry: false, error: expect.stringContaining('no luck') });
  });

  it('a running job cancelled', async () => {
    const id = await db.client.addJob('block', { gate: `${S}.gate` });
    await eventually(() => namesOf(id).includes('job:started'), 'the job started');
    await db.client.cancelJob(id);
    expect((await db.client.waitForJob(id)).state).toBe('cancelled');
    await eventually(() => namesOf(id).includes('job:cancelled'), 'job:cancelled');
  });

  it('a cancel that lands while the handler returns: the event says what the row says', async () => {
    await db.pool.query(`UPDATE ${S}.gate SET open = false`);
    const ok = await db.client.addJob('block', { gate: `${S}.gate` });
    const failing = await db.client.addJob('block', { gate: `${S}.gate`, fail: true }, { maxAttempts: 3 });
    await eventually(() => namesOf(ok).includes('job:started') && namesOf(failing).includes('job:started'), 'the jobs started');
    // The cancel request is written; its notification (cancelJob sends it next) has not reached the supervisor yet.
    await db.pool.query(`UPDATE ${S}.jobs SET cancel_requested_at = now() WHERE id = ANY($1::bigint[])`, [[ok, failing]]);
    await db.pool.query(`UPDATE ${S}.gate SET open = true`);
    expect((await db.client.waitForJob(ok)).state).toBe('cancelled');
    await eventually(() => namesOf(ok).length === 2, 'its end event');
    expect(namesOf(ok)).toEqual(['job:started', 'job:cancelled']);
    // A failure with attempts left is not retried either: the row is cancelled.
    expect((await db.client.waitForJob(failing)).state).toBe('cancelled');
    await eventually(() => namesOf(failing).length === 2, 'its end event');
    expect(namesOf(failing)).toEqual(['job:started', 'job:cancelled']);
    await db.pool.query(`UPDATE ${S}.gate SET open = false`);
  });

  it('a job over its timeout', async () => {
    const id = await db.client.addJob('hang', { cooperative: true }, { timeoutMs: 50, maxAttempts: 1 });
    expect((await db.client.waitForJob(id)).state).toBe('failed');
    await eventually(() => namesOf(id).includes('job:timedOut'), 'job:timedOut');
    expect(eventsOf(id).find((s) => s.name === 'job:timedOut')!.event).toMatchObject({ attempt: 1, willRetry: false });
  });
});

describe('thread and LISTEN events', () => {
  it('a thread that exits is reported crashed with the job it took, and its replacement; the job is reported retried', async () => {
    const id = await db.client.addJob('exit', { crashes: 1 });
    expect((await db.client.waitForJob(id)).state).toBe('succeeded');
    await eventually(() => seen.some((s) => s.name === 'thread:replaced'), 'thread:replaced');
    const crashed = seen.find((s) => s.name === 'thread:crashed');
    expect(crashed?.event).toMatchObject({ threadId: expect.any(Number), exitCode: 1, jobIds: [id] });
    await eventually(() => namesOf(id).includes('job:succeeded'), 'job:succeeded');
    expect(namesOf(id)).toEqual(['job:started', 'job:retried', 'job:started', 'job:succeeded']);
    expect(eventsOf(id)[1].event).toMatchObject({ id, attempt: 1, durationMs: null, error: expect.stringMatching(/^thread crashed: /) });
  });

  it("a thread that crashes on the job's last attempt: thread:crashed names it, and job:failed says it will not run again", async () => {
    const id = await db.client.addJob('exit', { crashes: 5 }, { maxAttempts: 1 });
    const job = await db.client.waitForJob(id);
    expect(job).toMatchObject({ state: 'failed', attempts: 1 });
    await eventually(() => namesOf(id).includes('job:failed'), 'job:failed');
    expect(namesOf(id)).toEqual(['job:started', 'job:failed']);
    expect(eventsOf(id)[1].event).toEqual({
      id,
      task: 'exit',
      queue: 'default',
      attempt: 1,
      threadId: expect.any(Number),
      durationMs: null,
      error: job.lastError,
      willRetry: false,
    });
    await eventually(
      () => seen.some((s) => s.name === 'thread:crashed' && (s.event as { jobIds: string[] }).jobIds.includes(id)),
      'thread:crashed naming the job',
    );
  });

  it('a lost LISTEN connection, and its return', async () => {
    await db.pool.query('SELECT pg_terminate_backend($1)', [sup.listenerPid()]);
    await eventually(() => seen.some((s) => s.name === 'listen:restored'), 'listen:restored');
    const names = seen.map((s) => s.name).filter((n) => n.startsWith('listen:'));
    expect(names.slice(0, 2)).toEqual(['listen:lost', 'listen:restored']);
  });

  it('a listener that throws is logged; the supervisor goes on', async () => {
    const throwing = () => {
      throw new Error('a broken listener');
    };
    sup.on('job:succeeded', throwing);
    try {
      const id = await db.client.addJob('square', { n: 4 });
      expect((await db.client.waitForJob(id)).state).toBe('succeeded');
      await eventually(() => namesOf(id).includes('job:succeeded'), 'the other listener still heard it');
    } finally {
      sup.off('job:succeeded', throwing);
    }
  });

  it('a listener that throws does not keep the event from the listeners after it, and an async one that rejects is caught', async () => {
    const rejections: unknown[] = [];
    const onRejection = (reason: unknown) => rejections.push(reason);
    process.on('unhandledRejection', onRejection);
    const throwing = () => {
      throw new Error('a broken listener');
    };
    const rejecting = async () => {
      throw new Error('a broken async listener');
    };
    const after: string[] = [];
    const later = (event: SupervisorEvents['job:succeeded']) => after.push(event.id);
    sup.on('job:succeeded', throwing);
    sup.on('job:succeeded', rejecting);
    sup.on('job:succeeded', later);
    try {
      const id = await db.client.addJob('square', { n: 5 });
      expect((await db.client.waitForJob(id)).state).toBe('succeeded');
      await eventually(() => after.includes(id), 'the listener after the broken ones heard it');
      // A rejection is reported at the end of the turn it happened in: one more job gives it time.
      const next = await db.client.addJob('square', { n: 6 });
      await db.client.waitForJob(next);
      await eventually(() => after.includes(next), 'the next job heard too');
      expect(rejections).toEqual([]);
    } finally {
      sup.off('job:succeeded', throwing);
      sup.off('job:succeeded', rejecting);
      sup.off('job:succeeded', later);
      process.off('unhandledRejection', onRejection);
    }
  });
});
