import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Supervisor } from '../supervisor/public.ts';
import { eventually, FIXTURE_TASKS, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';
import { CLI, run, start as startProcess, type Running } from './helpers/process.ts';

/**
 * Flows run by real supervisors: fan-out and fan-in across two of them (one
 * deleting its successes), a parent that adds children and a continuation
 * and finishes, a dependency retried, and one whose supervisor process is
 * SIGKILLed mid-job. Every dependent's runs are written to a ledger whose
 * unique (job, attempt) turns a second run into an error, and counted.
 */
const db = useMigratedSchema('workflows');
const { client, s } = db;
const LEDGER = `${s}.ledger`;

const SUPERVISOR_PROCESS = path.resolve(import.meta.dirname, 'fixtures/supervisor-process.ts');
// A lost supervisor's lease runs out quickly; a live one's never does (2x the heartbeat and more).
const TIMING = { leaseMs: 1_500, heartbeatIntervalMs: 200, sweepIntervalMs: 200, reaperIntervalMs: 200 };

const running: Supervisor[] = [];
const processes: Running[] = [];
afterEach(async () => {
  for (const proc of processes.splice(0)) {
    if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill('SIGKILL');
    await proc.exited;
  }
  await Promise.all(running.splice(0).map((sv) => sv.stop()));
});

async function supervise(options: Parameters<typeof startTestSupervisor>[1] = {}): Promise<Supervisor> {
  const sv = await startTestSupervisor(db, { threads: 2, concurrency: 8, shutdownGraceMs: 0, ...options });
  running.push(sv);
  return sv;
}

async function ensureLedger(): Promise<void> {
  await db.pool.query(`CREATE TABLE IF NOT EXISTS ${LEDGER} (job_id bigint NOT NULL, attempt integer NOT NULL, UNIQUE (job_id, attempt))`);
}

async function runsOf(id: string): Promise<number[]> {
  const { rows } = await db.pool.query(`SELECT attempt FROM ${LEDGER} WHERE job_id = $1 ORDER BY attempt`, [id]);
  return rows.map((r) => r.attempt);
}

describe('flows run by supervisors', () => {
  it('fans out and in across two supervisors, one deleting its successes: the fan-in runs once, after every child, and reads their results', async () => {
    await ensureLedger();
    const children = Array.from({ length: 40 }, (_, i) => ({
      name: `child-${i}`,
      task: 'square',
      payload: { n: (i + 1) ** 2 },
      after: ['root'],
    }));
    const ids = await client.addFlow([
      { name: 'root', task: 'square', payload: { n: 1 } },
      ...children,
      { name: 'fan-in', task: 'collect', payload: { table: LEDGER }, after: children.map((c) => c.name) },
    ]);
    // The supervisors start once the wait is registered: the one deleting its
    // successes keeps a job someone waits for, and the flow can end before a
    // wait begun afterwards would have marked the fan-in.
    const waiting = client.waitForJob(ids['fan-in'], { timeoutMs: 60_000 });
    await eventually(
      async () => (await db.pool.query(`SELECT watched FROM ${s}.jobs WHERE id = $1`, [ids['fan-in']])).rows[0]?.watched,
      'the wait for the fan-in to be registered',
    );
    await supervise({ deleteSucceeded: true });
    await supervise();
    const fanIn = await waiting;
    expect([fanIn.state, fanIn.lastError]).toEqual(['succeeded', null]);
    const deps = (fanIn.result as { deps: Array<{ id: string; task: string; state: string; result: { root: number } }> }).deps;
    expect(deps.map((d) => [d.task, d.state, d.result.root])).toEqual(children.map((_, i) => ['square', 'succeeded', i + 1]));
    expect(await runsOf(ids['fan-in'])).toEqual([1]);
    // Jobs with dependents are kept even by a supervisor that deletes its successes: their outcome wakes the dependents.
    const { rows } = await db.pool.query(
      `SELECT max(finished_at) AS last FROM ${s}.jobs WHERE id = ANY($1::bigint[]) AND state = 'succeeded' HAVING count(*) = $2`,
      [children.map((c) => ids[c.name]), children.length],
    );
    expect(rows).toHaveLength(1);
    // That it ran after every child is shown by what it read: each child succeeded, with its result.
    // (Its started_at, the claim transaction's now(), may precede the last child's finished_at: a
    // claim begun earlier can wait on a lock the outcome write holds, then see the fan-in due.)
  });

  it('never strands a dependent enqueued while its dependency runs or finishes, with two supervisors and four enqueuers', async () => {
    await supervise();
    await supervise();
    const dependents: string[] = [];
    await Promise.all(
      [0, 1, 2, 3].map(async () => {
        for (let i = 0; i < 100; i++) {
          const dependency = await client.addJob('square', { n: i });
          // Enqueued at once: the dependency is pending, being claimed, running or already done.
          dependents.push(await client.addJob('collect', {}, { dependsOn: [dependency] }));
        }
      }),
    );
    const ended = await eventually(async () => {
      const { rows } = await db.pool.query(`SELECT state, count(*)::int AS n FROM ${s}.jobs WHERE id = ANY($1::bigint[]) GROUP BY state`, [
        dependents,
      ]);
      return rows.length === 1 && rows[0].state === 'succeeded' ? rows : null;
    }, 'every dependent to run');
    expect(ended).toEqual([{ state: 'succeeded', n: 400 }]);
  });

  it('cancels the dependents of a running job that is cancelled, and runs none of them', async () => {
    await db.pool.query(`CREATE TABLE IF NOT EXISTS ${s}.closed_gate (open boolean NOT NULL); INSERT INTO ${s}.closed_gate VALUES (false)`);
    await supervise();
    const ids = await client.addFlow([
      { name: 'root', task: 'block', payload: { gate: `${s}.closed_gate` } },
      { name: 'next', task: 'square', payload: { n: 4 }, after: ['root'] },
      { name: 'last', task: 'collect', after: ['next'] },
    ]);
    await eventually(async () => (await client.getJob(ids.root))?.state === 'running', 'the root to run');
    expect(await client.cancelJob(ids.root)).toEqual({ state: 'cancelling' });
    const last = await client.waitForJob(ids.last, { timeoutMs: 30_000 });
    expect([last.state, last.lastError]).toEqual(['cancelled', `dependency ${ids.next} was cancelled`]);
    expect((await client.getJob(ids.root))?.state).toBe('cancelled');
    expect((await client.getJob(ids.next))?.startedAt).toBeNull();
  });

  it('lets a parent add children and a continuation, and finish: the continuation runs once the children are done', async () => {
    await ensureLedger();
    await supervise();
    const parent = await client.addJob('spawn-children', { children: 5, table: LEDGER });
    const done = await client.waitForJob(parent, { timeoutMs: 30_000 });
    expect(done.state).toBe('succeeded');
    const continuation = (done.result as { continuation: string }).continuation;
    const after = await client.waitForJob(continuation, { timeoutMs: 30_000 });
    expect(after.state).toBe('succeeded');
    const deps = (after.result as { deps: Array<{ task: string; state: string; result: { n: number } }> }).deps;
    expect(deps.map((d) => [d.task, d.state, d.result.n])).toEqual([1, 2, 3, 4, 5].map((n) => ['square', 'succeeded', n]));
    expect(await runsOf(continuation)).toEqual([1]);
    // It ran after every child's outcome: it read each child succeeded, with its result (the
    // parent's own outcome write may come later: it is written after its handler returned).
  });

  it('releases the dependent of a retried dependency (failed once, then succeeded) once, after the success', async () => {
    await ensureLedger();
    await supervise({ retryBaseMs: 10, retryMaxMs: 10 });
    const dependency = await client.addJob('fail-once', { table: LEDGER, n: 7 }, { maxAttempts: 3 });
    const dependent = await client.addJob('collect', { table: LEDGER }, { dependsOn: [dependency] });
    const done = await client.waitForJob(dependent, { timeoutMs: 30_000 });
    expect(done.state).toBe('succeeded');
    expect(await runsOf(dependency)).toEqual([1, 2]);
    expect(await runsOf(dependent)).toEqual([1]);
    expect((done.result as { deps: unknown[] }).deps).toEqual([
      {
        id: dependency,
        task: 'fail-once',
        state: 'succeeded',
        result: { attempt: 2, n: 7 },
        error: expect.stringMatching(/^Error: first attempt fails on purpose/),
      },
    ]);
    // The dependent read the second attempt's success: it was released by it, not by the failure.
  });

  it('runs the dependent of a job whose supervisor process was SIGKILLed mid-job once, after the re-run on another process', async () => {
    await ensureLedger();
    await db.pool.query(`CREATE TABLE ${s}.gate (open boolean NOT NULL); INSERT INTO ${s}.gate VALUES (false)`);
    const spawn = () => {
      const proc = startProcess([SUPERVISOR_PROCESS], {
        DATABASE_URL: db.url,
        GRAPEVINE_TEST_SUPERVISOR: JSON.stringify({ schema: db.schema, tasks: FIXTURE_TASKS, threads: 1, concurrency: 4, ...TIMING }),
      });
      processes.push(proc);
      return proc;
    };
    const doomed = spawn();
    const doomedId = (await doomed.waitFor(/ready \S+/)).slice('ready '.length);
    const dependency = await client.addJob('block', { gate: `${s}.gate` });
    const dependent = await client.addJob('collect', { table: LEDGER }, { dependsOn: [dependency] });
    await eventually(async () => {
      const { rows } = await db.pool.query(`SELECT state, locked_by FROM ${s}.jobs WHERE id = $1`, [dependency]);
      return rows[0].state === 'running' && rows[0].locked_by === doomedId;
    }, 'the doomed process to run the dependency');

    doomed.child.kill('SIGKILL');
    expect((await doomed.exited).signal).toBe('SIGKILL');
    const survivor = spawn();
    const survivorId = (await survivor.waitFor(/ready \S+/)).slice('ready '.length);
    await eventually(async () => {
      const { rows } = await db.pool.query(`SELECT state, locked_by, attempts FROM ${s}.jobs WHERE id = $1`, [dependency]);
      return rows[0].state === 'running' && rows[0].locked_by === survivorId && rows[0].attempts === 2;
    }, 'the surviving process to re-run the dependency once its lease ran out');
    // The release back to pending did not wake the dependent: only an end does.
    expect((await client.getJob(dependent))?.state).toBe('waiting');

    await db.pool.query(`UPDATE ${s}.gate SET open = true`);
    const done = await client.waitForJob(dependent, { timeoutMs: 30_000 });
    expect(done.state).toBe('succeeded');
    expect(await runsOf(dependent)).toEqual([1]);
    expect((await client.getJob(dependency))?.attempts).toBe(2);
  });
});

describe('the command line', () => {
  const env = { DATABASE_URL: db.url };
  const cli = (...args: string[]) => run([CLI, ...args, '--schema', db.schema], env);

  it('adds a job with --depends-on, and grapevine job shows its dependencies and dependents', async () => {
    const a = await client.addJob('square', { n: 4 });
    const added = await cli('add', 'collect', '--depends-on', `${a}`, '--on-dependency-failure', 'ignore');
    expect(added.stderr).toBe('');
    const dependent = added.stdout.trim();
    const shown = JSON.parse((await cli('job', dependent)).stdout);
    expect(shown).toMatchObject({
      id: dependent,
      state: 'waiting',
      dependencies: [{ id: a, task: 'square', state: 'pending', onFailure: 'ignore' }],
      dependents: [],
    });
    const parent = JSON.parse((await cli('job', a)).stdout);
    expect(parent).toMatchObject({ dependencies: [], dependents: [{ id: dependent, task: 'collect', state: 'waiting' }] });

    const refused = await cli('add', 'collect', '--depends-on', '999999995');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/the new job depends on job 999999995, which does not exist/);
  });
});
