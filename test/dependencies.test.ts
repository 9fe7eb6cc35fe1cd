import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { GrapevineError } from '../src/errors.ts';
import { directDatabaseUrl, eventually, useMigratedSchema } from './helpers/db.ts';

/**
 * Dependencies at enqueue and at a dependency's end, on a real PostgreSQL,
 * with no supervisor: outcomes are written as raw UPDATEs, which the
 * jobs_finished trigger covers as it covers the supervisors' outcome writes
 * (test/workflows.test.ts runs them through supervisors).
 */
const db = useMigratedSchema('deps');
const { client, s } = db;

async function rows(ids: string[]) {
  const { rows } = await db.pool.query(
    `SELECT id::text AS id, state, waiting_for, last_error FROM ${s}.jobs WHERE id = ANY($1::bigint[]) ORDER BY id`,
    [ids],
  );
  return rows as Array<{ id: string; state: string; waiting_for: number | null; last_error: string | null }>;
}

const stateOf = async (id: string) => (await rows([id]))[0]?.state;
const finish = (id: string, state: 'succeeded' | 'failed' | 'cancelled') =>
  db.pool.query(`UPDATE ${s}.jobs SET state = $2, finished_at = now() WHERE id = $1`, [id, state]);

async function refusal(promise: Promise<unknown>): Promise<GrapevineError> {
  const err = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GrapevineError);
  expect((err as GrapevineError).code).toBe('GRAPEVINE_DEPENDENCY_INVALID');
  return err as GrapevineError;
}

/** Whether a session waits for a row lock: the other side of a race is then held where the test wants it. */
async function someoneWaitsForALock(): Promise<boolean> {
  const { rows } = await db.pool.query(
    `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`,
    [db.schema],
  );
  return rows[0].n > 0;
}

describe('a job with dependencies', () => {
  it('waits in its own state, and becomes pending when its last dependency succeeds', async () => {
    const [a, b] = await client.addJobs([{ task: 'square' }, { task: 'square' }]);
    const c = await client.addJob('collect', {}, { dependsOn: [a, b] });
    expect(await rows([c])).toEqual([{ id: c, state: 'waiting', waiting_for: 2, last_error: null }]);
    expect((await client.getJob(c))?.state).toBe('waiting');
    await finish(a, 'succeeded');
    expect(await rows([c])).toEqual([{ id: c, state: 'waiting', waiting_for: 1, last_error: null }]);
    await finish(b, 'succeeded');
    expect(await rows([c])).toEqual([{ id: c, state: 'pending', waiting_for: 0, last_error: null }]);
  });

  it('is enqueued from SQL with depends_on, and from addJobs', async () => {
    const a = await client.addJob('square');
    const { rows: sql } = await db.pool.query(`SELECT ${s}.add_job('collect', depends_on => array[$1::bigint]) AS id`, [a]);
    const [viaBatch, plain] = await client.addJobs([{ task: 'collect', dependsOn: [a] }, { task: 'square' }]);
    expect((await rows([String(sql[0].id), viaBatch, plain])).map((r) => r.state)).toEqual(['waiting', 'waiting', 'pending']);
    await finish(a, 'succeeded');
    expect((await rows([String(sql[0].id), viaBatch])).map((r) => r.state)).toEqual(['pending', 'pending']);
  });

  it('is due at once when its dependencies had already succeeded, and fails at once when one had failed', async () => {
    const [done, failed] = await client.addJobs([{ task: 'square' }, { task: 'square' }]);
    await finish(done, 'succeeded');
    await finish(failed, 'failed');
    const due = await client.addJob('collect', {}, { dependsOn: [done] });
    const doomed = await client.addJob('collect', {}, { dependsOn: [done, failed] });
    expect(await rows([due, doomed])).toMatchObject([
      { id: due, state: 'pending', waiting_for: 0, last_error: null },
      { id: doomed, state: 'failed', last_error: `dependency ${failed} failed` },
    ]);
  });

  it('refuses unknown dependencies, bad ids and bad policies with GRAPEVINE_DEPENDENCY_INVALID, adding nothing', async () => {
    const before = (await db.pool.query(`SELECT count(*)::int AS n FROM ${s}.jobs`)).rows[0].n;
    const a = await client.addJob('square');
    const unknown = await refusal(client.addJob('collect', {}, { dependsOn: [a, '999999999'] }));
    expect(unknown.message).toMatch(/depends on job 999999999, which does not exist/);
    await refusal(client.addJobs([{ task: 'square' }, { task: 'collect', dependsOn: ['999999998'] }]));
    expect((await refusal(client.addJob('collect', {}, { dependsOn: ['12x'] }))).message).toMatch(/"12x", which is not a job id/);
    expect((await refusal(client.addJob('collect', {}, { dependsOn: [a], onDependencyFailure: 'retry' as 'run' }))).message).toMatch(
      /use one of fail, run, ignore/,
    );
    await expect(db.pool.query(`SELECT ${s}.add_job('collect', depends_on => array[999999997]::bigint[])`)).rejects.toMatchObject({
      code: 'GV001',
    });
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM ${s}.jobs`)).rows[0].n).toBe(before + 1);
  });

  it('cannot be combined with a key in one batch', async () => {
    const a = await client.addJob('square');
    const err = await refusal(
      client.addJobs([
        { task: 'collect', dependsOn: [a] },
        { task: 'square', key: 'deps-key' },
      ]),
    );
    expect(err.message).toMatch(/keys cannot be combined with dependencies/);
  });
});

describe('the race between an enqueue and its dependency finishing', () => {
  it('counts a dependency that finishes while the dependent is being inserted: the finish waits, then wakes it', async () => {
    const a = await client.addJob('square');
    const enqueuer = await db.pool.connect();
    try {
      await enqueuer.query('BEGIN');
      const c = await client.addJob('collect', {}, { dependsOn: [a], db: enqueuer });
      // The outcome write meets the enqueue's row lock on the dependency...
      const finishing = finish(a, 'succeeded');
      await eventually(someoneWaitsForALock, 'the outcome write to wait for the enqueue');
      await enqueuer.query('COMMIT');
      await finishing;
      // ... and, with a fresh snapshot, finds the committed dependent.
      expect(await rows([c])).toEqual([{ id: c, state: 'pending', waiting_for: 0, last_error: null }]);
    } finally {
      enqueuer.release();
    }
  });

  it('reads the finished state of a dependency whose outcome was still committing when the dependent was inserted', async () => {
    for (const outcome of ['succeeded', 'failed'] as const) {
      const a = await client.addJob('square');
      const writer = await db.pool.connect();
      try {
        await writer.query('BEGIN');
        await writer.query(`UPDATE ${s}.jobs SET state = $2, finished_at = now() WHERE id = $1`, [a, outcome]);
        // The enqueue waits for the outcome's row lock, then reads the committed state.
        const adding = client.addJob('collect', {}, { dependsOn: [a] });
        await eventually(someoneWaitsForALock, 'the enqueue to wait for the outcome write');
        await writer.query('COMMIT');
        const c = await adding;
        expect((await rows([c]))[0].state).toBe(outcome === 'succeeded' ? 'pending' : 'failed');
      } finally {
        writer.release();
      }
    }
  });

  it('is announced on the jobs channel when woken: thousands of dependents of one job in one statement', async () => {
    const listener = new pg.Client({ connectionString: directDatabaseUrl() });
    await listener.connect();
    try {
      const payloads: string[] = [];
      listener.on('notification', (m) => payloads.push(m.payload ?? ''));
      await listener.query(`LISTEN "${db.schema}_jobs"`);
      const a = await client.addJob('square');
      const dependents = await client.addJobs(Array.from({ length: 3000 }, () => ({ task: 'collect', dependsOn: [a] })));
      await listener.query('SELECT 1');
      payloads.length = 0;
      const { rowCount } = await finish(a, 'succeeded');
      expect(rowCount).toBe(1);
      expect(new Set((await rows(dependents)).map((r) => r.state))).toEqual(new Set(['pending']));
      await eventually(async () => {
        await listener.query('SELECT 1');
        const heard = new Set<number>();
        for (const token of payloads.join(',').split(',')) {
          const [first, last = first] = token.split('-').map(Number);
          for (let id = first; id <= last; id++) heard.add(id);
        }
        return dependents.every((id) => heard.has(Number(id)));
      }, 'every woken dependent to be announced');
      // Ranges: a handful of notifications, not one per job.
      expect(payloads.length).toBeLessThan(5);
    } finally {
      await listener.end();
    }
  });
});

describe('a dependency that fails for good or is cancelled', () => {
  it('fails its dependents by default, and theirs in turn; a cancelled one cancels them', async () => {
    const ids = await client.addFlow([
      { name: 'root', task: 'square' },
      { name: 'child', task: 'square', after: ['root'] },
      { name: 'grandchild', task: 'collect', after: ['child'] },
    ]);
    await finish(ids.root, 'failed');
    expect(await rows([ids.child, ids.grandchild])).toMatchObject([
      { state: 'failed', last_error: `dependency ${ids.root} failed` },
      { state: 'failed', last_error: `dependency ${ids.child} failed` },
    ]);

    const other = await client.addFlow([
      { name: 'root', task: 'square' },
      { name: 'left', task: 'square', after: ['root'] },
      { name: 'right', task: 'square', after: ['root'] },
      { name: 'join', task: 'collect', after: ['left', 'right'] },
    ]);
    // Cancelling a flow's root cancels what has not run.
    expect(await client.cancelJob(other.root)).toEqual({ state: 'cancelled' });
    expect((await rows(Object.values(other))).map((r) => r.state)).toEqual(['cancelled', 'cancelled', 'cancelled', 'cancelled']);
    expect((await rows([other.join]))[0].last_error).toMatch(/^dependency \d+ was cancelled$/);
  });

  it('runs a failure down a chain of 1,000 jobs in rounds, without nesting a call per job', async () => {
    const chain = Array.from({ length: 1000 }, (_, i) => ({ name: `step-${i}`, task: 'square', after: i > 0 ? [`step-${i - 1}`] : [] }));
    const ids = await client.addFlow(chain);
    await finish(ids['step-0'], 'failed');
    const { rows: states } = await db.pool.query(
      `SELECT state, count(*)::int AS n FROM ${s}.jobs WHERE id = ANY($1::bigint[]) GROUP BY state`,
      [Object.values(ids)],
    );
    expect(states).toEqual([{ state: 'failed', n: 1000 }]);
    expect((await rows([ids['step-999']]))[0].last_error).toBe(`dependency ${ids['step-998']} failed`);
  });

  it('runs at once a dependent whose policy is run, and counts the failure as done for one whose policy is ignore', async () => {
    const [a, b] = await client.addJobs([{ task: 'square' }, { task: 'square' }]);
    const [run, ignore] = await client.addJobs([
      { task: 'collect', dependsOn: [a, b], onDependencyFailure: 'run' },
      { task: 'collect', dependsOn: [a, b], onDependencyFailure: 'ignore' },
    ]);
    await finish(a, 'failed');
    expect((await rows([run, ignore])).map((r) => [r.state, r.waiting_for])).toEqual([
      ['pending', 1],
      ['waiting', 1],
    ]);
    await finish(b, 'succeeded');
    expect((await rows([run, ignore])).map((r) => r.state)).toEqual(['pending', 'pending']);
  });

  it('counts a dependency once however often it finishes (an operator retried it)', async () => {
    const [a, b] = await client.addJobs([{ task: 'square' }, { task: 'square' }]);
    const c = await client.addJob('collect', {}, { dependsOn: [a, b], onDependencyFailure: 'ignore' });
    await finish(a, 'failed');
    await db.pool.query(`UPDATE ${s}.jobs SET state = 'pending', finished_at = NULL WHERE id = $1`, [a]);
    await finish(a, 'succeeded');
    expect((await rows([c]))[0]).toMatchObject({ state: 'waiting', waiting_for: 1 });
  });
});

describe('addFlow', () => {
  it('enqueues a DAG in one statement whatever order it is listed in, and resolves to each name its id', async () => {
    const ids = await client.addFlow([
      { name: 'fan-in', task: 'collect', after: ['a', 'b'] },
      { name: 'a', task: 'square', payload: { n: 4 }, after: ['fetch'] },
      { name: 'b', task: 'square', payload: { n: 9 }, after: ['fetch'] },
      { name: 'fetch', task: 'square', payload: { n: 1 } },
    ]);
    expect(Object.keys(ids).sort()).toEqual(['a', 'b', 'fan-in', 'fetch']);
    expect((await rows([ids.fetch, ids.a, ids.b, ids['fan-in']])).map((r) => [r.state, r.waiting_for])).toEqual([
      ['pending', null],
      ['waiting', 1],
      ['waiting', 1],
      ['waiting', 2],
    ]);
    const { rows: links } = await db.pool.query(
      `SELECT job_id::text AS job, depends_on::text AS dep FROM ${s}.job_dependencies WHERE job_id = ANY($1::bigint[]) ORDER BY 1, 2`,
      [Object.values(ids)],
    );
    expect(links).toEqual(
      [
        { job: ids.a, dep: ids.fetch },
        { job: ids.b, dep: ids.fetch },
        { job: ids['fan-in'], dep: ids.a },
        { job: ids['fan-in'], dep: ids.b },
      ].sort((x, y) => Number(x.job) - Number(y.job) || Number(x.dep) - Number(y.dep)),
    );
  });

  it('refuses cycles, unknown names and repeated names, naming them, and adds nothing', async () => {
    const before = (await db.pool.query(`SELECT count(*)::int AS n FROM ${s}.jobs`)).rows[0].n;
    const cycle = await refusal(
      client.addFlow([
        { name: 'a', task: 'square', after: ['c'] },
        { name: 'b', task: 'square', after: ['a'] },
        { name: 'c', task: 'square', after: ['b'] },
      ]),
    );
    expect(cycle.message).toMatch(/the flow has a cycle: "a" waits for "c" waits for "b" waits for "a"/);
    expect((await refusal(client.addFlow([{ name: 'a', task: 'square', after: ['a'] }]))).message).toMatch(/cycle: "a" waits for "a"/);
    expect((await refusal(client.addFlow([{ name: 'a', task: 'square', after: ['nope'] }]))).message).toMatch(
      /"a" comes after "nope", which is not a job of this flow/,
    );
    expect(
      (
        await refusal(
          client.addFlow([
            { name: 'a', task: 'square' },
            { name: 'a', task: 'square' },
          ]),
        )
      ).message,
    ).toMatch(/two jobs of the flow are named "a"/);
    // A whole flow goes in one statement: one bad job in it adds none of the others.
    await refusal(
      client.addFlow([
        { name: 'ok', task: 'square' },
        { name: 'bad', task: 'square', dependsOn: ['999999996'] },
      ]),
    );
    // SQL callers list each job after those it follows.
    await expect(db.pool.query(`SELECT ${s}.add_jobs('[{"task": "square", "after": [2]}, {"task": "square"}]')`)).rejects.toMatchObject({
      code: 'GV001',
      message: expect.stringMatching(/not an earlier job of the same batch/),
    });
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM ${s}.jobs`)).rows[0].n).toBe(before);
  });
});

describe('pruning', () => {
  it('deletes a pruned dependent’s dependency rows with it', async () => {
    const a = await client.addJob('square');
    const c = await client.addJob('collect', {}, { dependsOn: [a] });
    await finish(a, 'succeeded');
    await db.pool.query(`UPDATE ${s}.jobs SET state = 'succeeded', finished_at = now() - interval '2 days' WHERE id = ANY($1::bigint[])`, [
      [a, c],
    ]);
    await db.pool.query(`SELECT ${s}.prune_finished(86400000, 1000)`);
    const { rows: left } = await db.pool.query(`SELECT count(*)::int AS n FROM ${s}.job_dependencies WHERE job_id = $1`, [c]);
    expect(left[0].n).toBe(0);
    expect(await stateOf(c)).toBeUndefined();
  });
});
