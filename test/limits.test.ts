import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { channelsFor } from '../src/schema/channels.ts';
import { claimByIds, claimNext, completeJobs, hasDue, releaseJobs, type ClaimParams } from '../src/sql/jobs.ts';
import { createControl, GrapevineError } from '../supervisor/public.ts';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';
import { CLI, run } from './helpers/process.ts';

/**
 * Queue limits enforced inside the claim (docs/limits.md), driven statement
 * by statement on real connections: racing claims never overshoot, groups
 * are taken head first, serial groups in order, rates per window, pauses
 * held, and slots freed by outcomes announced. The fleet of supervisor
 * processes is in limits-fleet.test.ts.
 */
const db = useMigratedSchema('limits');
const control = createControl({ connectionString: db.url, schema: db.schema });
afterAll(() => control.close());

const TASKS = ['t'];
const claimer = (thread: number): ClaimParams => ({ tasks: TASKS, queues: null, owner: 'test', thread, leaseMs: 60_000 });

async function add(queue: string, jobs: Array<{ group?: string; priority?: number }>): Promise<string[]> {
  return db.client.addJobs(jobs.map((j) => ({ task: 't', queue, ...j })));
}

async function running(queue: string): Promise<Array<{ id: string; group_key: string | null }>> {
  const { rows } = await db.pool.query(`SELECT id::text, group_key FROM ${db.s}.jobs WHERE queue = $1 AND state = 'running' ORDER BY id`, [
    queue,
  ]);
  return rows;
}

/** Claims on separate connections, in one transaction each, all sent at once. */
async function raceClaims(n: number, limit: number): Promise<number> {
  const clients = await Promise.all(Array.from({ length: n }, () => db.pool.connect()));
  try {
    const claimed = await Promise.all(
      clients.map(async (c, i) => {
        await c.query('BEGIN');
        const rows = await claimNext(c, db.schema, { ...claimer(i), limit });
        await c.query('COMMIT');
        return rows.length;
      }),
    );
    return claimed.reduce((a, b) => a + b, 0);
  } finally {
    for (const c of clients) c.release();
  }
}

/** The 'at:' hints on the jobs channel, from now on. */
async function listenForHints(): Promise<{ listener: pg.Client; hints: string[] }> {
  const listener = new pg.Client({ connectionString: db.url });
  await listener.connect();
  const hints: string[] = [];
  listener.on('notification', (n) => n.payload?.startsWith('at:') && hints.push(n.payload));
  await listener.query(`LISTEN "${channelsFor(db.schema).jobs}"`);
  return { listener, hints };
}

async function complete(ids: string[]): Promise<void> {
  const { rows } = await db.pool.query(`SELECT id::text, claim_token::text FROM ${db.s}.jobs WHERE id = ANY($1::bigint[])`, [ids]);
  await completeJobs(db.pool, db.schema, { jobs: rows.map((r) => ({ id: r.id, token: r.claim_token, result: 'null' })) });
}

describe('queue concurrency', () => {
  it('never runs more than the limit however many claims race, and a freed slot is taken by the next claim', async () => {
    await control.setQueue('race', { concurrency: 3 });
    await add(
      'race',
      Array.from({ length: 40 }, () => ({})),
    );
    // Four connections (the pool's size) race with room for 10 each.
    expect(await raceClaims(4, 10)).toBe(3);
    expect(await raceClaims(4, 10)).toBe(0);
    expect(await hasDue(db.pool, db.schema, { tasks: TASKS, queues: null })).toBe(false);
    const held = await running('race');
    await complete([held[0].id]);
    expect(await hasDue(db.pool, db.schema, { tasks: TASKS, queues: null })).toBe(true);
    expect(await raceClaims(4, 10)).toBe(1);
    expect(await running('race')).toHaveLength(3);
  });

  it('counts the jobs already running when a limit is first set, and leaves queues without limits alone', async () => {
    await add(
      'late',
      Array.from({ length: 6 }, () => ({})),
    );
    await add(
      'free',
      Array.from({ length: 5 }, () => ({})),
    );
    const first = await claimNext(db.pool, db.schema, { ...claimer(1), limit: 4, queues: ['late'] });
    expect(first).toHaveLength(4);
    await control.setQueue('late', { concurrency: 5 });
    expect(await claimNext(db.pool, db.schema, { ...claimer(1), limit: 10, queues: ['late'] })).toHaveLength(1);
    // The unlimited queue drains in one claim.
    expect(await claimNext(db.pool, db.schema, { ...claimer(1), limit: 10, queues: ['free'] })).toHaveLength(5);
  });
});

describe('groups', () => {
  it("takes the head of every group before any group's second job (oldest first across groups)", async () => {
    await control.setQueue('fair', { groupConcurrency: 1 });
    // Enqueued group by group: a walk in job order would reach group g1 only after g0's whole backlog.
    for (let g = 0; g < 30; g++)
      await add(
        'fair',
        Array.from({ length: 5 }, () => ({ group: `g${g}` })),
      );
    const claimed = await claimNext(db.pool, db.schema, { ...claimer(1), limit: 100, queues: ['fair'] });
    expect(claimed).toHaveLength(30);
    const groups = (await running('fair')).map((r) => r.group_key);
    expect(new Set(groups).size).toBe(30);
  });

  it('runs a serial group in order of priority, run time and id; a job released by a crash keeps its place', async () => {
    await control.setQueue('serial', { groupConcurrency: 1 });
    const low = await add('serial', [{ group: 'a' }, { group: 'a' }]);
    const [high] = await add('serial', [{ group: 'a', priority: 5 }]);
    const order: string[] = [];
    let released = false;
    for (;;) {
      const claimed = await claimNext(db.pool, db.schema, { ...claimer(1), limit: 10, queues: ['serial'] });
      if (claimed.length === 0) break;
      expect(claimed).toHaveLength(1);
      order.push(claimed[0].id);
      if (!released && claimed[0].id === low[0]) {
        released = true;
        await releaseJobs(db.pool, db.schema, { owner: 'test', jobs: [{ id: low[0], thread: 1, reason: 'crash', count: true }] });
        continue;
      }
      await complete([claimed[0].id]);
    }
    expect(order).toEqual([high, low[0], low[0], low[1]]);
  });

  it('bounds each group at its limit and jobs without a group only by the queue', async () => {
    await control.setQueue('pairs', { groupConcurrency: 2, concurrency: 7 });
    await add('pairs', [...Array.from({ length: 4 }, () => ({ group: 'x' })), ...Array.from({ length: 4 }, () => ({ group: 'y' }))]);
    await add(
      'pairs',
      Array.from({ length: 5 }, () => ({})),
    );
    expect(await claimNext(db.pool, db.schema, { ...claimer(1), limit: 100, queues: ['pairs'] })).toHaveLength(7);
    const rows = await running('pairs');
    expect(rows.filter((r) => r.group_key === 'x').length).toBeLessThanOrEqual(2);
    expect(rows.filter((r) => r.group_key === 'y').length).toBeLessThanOrEqual(2);
  });

  it('claims notified ids of a limited queue as the limit allows, oldest of the group first', async () => {
    await control.setQueue('notified', { groupConcurrency: 1 });
    const ids = await add('notified', [{ group: 'n' }, { group: 'n' }, { group: 'n' }]);
    const claimed = await claimByIds(db.pool, db.schema, { ...claimer(1), ids: [ids[2], ids[1]] });
    expect(claimed.map((r) => r.id)).toEqual([ids[0]]);
  });
});

describe('groups with dependencies, flows and keys', () => {
  it('stores the group of a job with dependencies (client, flow, SQL by name) or a key, and runs a serial group in order', async () => {
    await control.setQueue('deps', { groupConcurrency: 1 });
    const [parent] = await add('deps', [{ group: 'g' }]);
    const child = await db.client.addJob('t', {}, { queue: 'deps', group: 'g', dependsOn: [parent] });
    const flow = await db.client.addFlow([
      { name: 'a', task: 't', queue: 'deps', group: 'h' },
      { name: 'b', task: 't', queue: 'deps', group: 'h', after: ['a'] },
    ]);
    const keyed = await db.client.addJob('t', {}, { queue: 'deps', group: 'k1', key: 'deps-key' });
    expect(await db.client.addJob('t', {}, { queue: 'deps', group: 'k2', key: 'deps-key' })).toBe(keyed);
    const { rows: bySql } = await db.pool.query(
      `SELECT ${db.s}.add_job(task => 't', queue => 'deps', group_key => 's', depends_on => ARRAY[$1::bigint])::text AS id`,
      [parent],
    );
    const { rows } = await db.pool.query(
      `SELECT id::text, state, group_key, max_attempts_given FROM ${db.s}.jobs WHERE queue = 'deps' ORDER BY id`,
    );
    expect(rows).toEqual([
      { id: parent, state: 'pending', group_key: 'g', max_attempts_given: false },
      { id: child, state: 'waiting', group_key: 'g', max_attempts_given: false },
      { id: flow.a, state: 'pending', group_key: 'h', max_attempts_given: false },
      { id: flow.b, state: 'waiting', group_key: 'h', max_attempts_given: false },
      // A replace takes the new group with the new fields.
      { id: keyed, state: 'pending', group_key: 'k2', max_attempts_given: false },
      { id: bySql[0].id, state: 'waiting', group_key: 's', max_attempts_given: false },
    ]);
    // The claims return what main's threads need, max_attempts_given included.
    const first = await claimNext(db.pool, db.schema, { ...claimer(1), limit: 10, queues: ['deps'] });
    expect(first.map((r) => r.id).sort()).toEqual([parent, flow.a, keyed].sort());
    expect(first.every((r) => r.max_attempts_given === false)).toBe(true);
    await complete([parent]);
    // The parent's success wakes both dependents of group g's parent: one serial group (g), one other (s).
    const next = await claimNext(db.pool, db.schema, { ...claimer(1), limit: 10, queues: ['deps'] });
    expect(next.map((r) => r.id).sort()).toEqual([child, bySql[0].id].sort());
  });
});

describe('rate limits', () => {
  it('starts at most N per interval, stamped with the database clock, and announces when the window opens', async () => {
    await control.setQueue('rated', { rate: '3/2s' });
    await add(
      'rated',
      Array.from({ length: 5 }, () => ({})),
    );
    const { listener, hints } = await listenForHints();
    try {
      expect(await claimNext(db.pool, db.schema, { ...claimer(1), limit: 10, queues: ['rated'] })).toHaveLength(3);
      expect(await claimNext(db.pool, db.schema, { ...claimer(1), limit: 10, queues: ['rated'] })).toHaveLength(0);
      expect(await hasDue(db.pool, db.schema, { tasks: TASKS, queues: ['rated'] })).toBe(false);
      const { rows } = await db.pool.query(
        `SELECT (extract(epoch FROM min(started_at)) * 1000)::float8 AS first FROM ${db.s}.jobs WHERE queue = 'rated' AND state = 'running'`,
      );
      const wake = await eventually(
        () => hints.map((h) => Number(h.slice(3))).find((at) => at >= rows[0].first + 2_000),
        'the window hint',
      );
      expect(wake).toBeLessThanOrEqual(Math.ceil(rows[0].first + 2_000));
      // Once the database's clock passes the hint, the rest may start.
      await eventually(() => hasDue(db.pool, db.schema, { tasks: TASKS, queues: ['rated'] }), 'the window to open');
      expect(await claimNext(db.pool, db.schema, { ...claimer(1), limit: 10, queues: ['rated'] })).toHaveLength(2);
    } finally {
      await listener.end();
    }
  });

  it('bounds each group by the group rate', async () => {
    await control.setQueue('grated', { groupRate: { limit: 2, intervalMs: 60_000 } });
    await add('grated', [...Array.from({ length: 4 }, () => ({ group: 'p' })), ...Array.from({ length: 4 }, () => ({ group: 'q' }))]);
    const first = await claimNext(db.pool, db.schema, { ...claimer(1), limit: 10, queues: ['grated'] });
    expect(first).toHaveLength(4);
    await complete(first.map((r) => r.id));
    expect(await claimNext(db.pool, db.schema, { ...claimer(1), limit: 10, queues: ['grated'] })).toHaveLength(0);
  });
});

describe('pause across the fleet', () => {
  it('holds a paused queue for every claim path, and a resume announces its jobs', async () => {
    const ids = await add('held', [{}, {}]);
    const paused = await control.pauseQueue('held');
    expect(paused.paused).toBe(true);
    expect(await claimByIds(db.pool, db.schema, { ...claimer(1), ids })).toHaveLength(0);
    expect(await claimNext(db.pool, db.schema, { ...claimer(1), limit: 10, queues: ['held'] })).toHaveLength(0);
    expect(await hasDue(db.pool, db.schema, { tasks: TASKS, queues: ['held'] })).toBe(false);
    await control.resumeQueue('held');
    expect(await claimNext(db.pool, db.schema, { ...claimer(1), limit: 10, queues: ['held'] })).toHaveLength(2);
  });
});

describe('a running supervisor', () => {
  it("starts none of a paused queue's jobs, notified or swept, runs another queue's meanwhile, and runs them once resumed", async () => {
    await control.pauseQueue('sup-held');
    const held = await db.client.addJobs([1, 2, 3].map(() => ({ task: 'noop', queue: 'sup-held' })));
    const sup = await startTestSupervisor(db, { queues: ['sup-held', 'sup-free'], threads: 1, sweepIntervalMs: 50 });
    try {
      // A job of another queue enqueued after them runs: the held ones were heard and swept past.
      const [free] = await db.client.addJobs([{ task: 'noop', queue: 'sup-free' }]);
      await db.client.waitForJob(free, { timeoutMs: 30_000 });
      const { rows } = await db.pool.query(
        `SELECT count(*)::int AS n FROM ${db.s}.jobs WHERE id = ANY($1::bigint[]) AND state = 'pending'`,
        [held],
      );
      expect(rows[0].n).toBe(3);
      await control.resumeQueue('sup-held');
      for (const id of held) expect((await db.client.waitForJob(id, { timeoutMs: 30_000 })).state).toBe('succeeded');
    } finally {
      await sup.stop();
    }
  });
});

describe('a thread that prefetches', () => {
  it('holds no more claimed jobs of a limited queue than the limit: claimed counts as running', async () => {
    await control.setQueue('prefetch', { concurrency: 3 });
    // Every statement that changes jobs records how many of the queue's jobs are claimed after it.
    await db.pool.query(`CREATE TABLE ${db.s}.prefetch_seen (running integer NOT NULL)`);
    await db.pool.query(`
      CREATE FUNCTION ${db.s}.prefetch_count() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        INSERT INTO ${db.s}.prefetch_seen
        SELECT count(*) FROM ${db.s}.jobs WHERE queue = 'prefetch' AND state = 'running';
        RETURN NULL;
      END $$`);
    await db.pool.query(
      `CREATE TRIGGER prefetch_count AFTER UPDATE ON ${db.s}.jobs FOR EACH STATEMENT EXECUTE FUNCTION ${db.s}.prefetch_count()`,
    );
    try {
      const ids = await db.client.addJobs(Array.from({ length: 120 }, () => ({ task: 'noop', queue: 'prefetch' })));
      // Quick handlers at concurrency 2: the thread may hold up to 4, the queue allows 3.
      const sup = await startTestSupervisor(db, { queues: ['prefetch'], threads: 1, concurrency: 2 });
      try {
        await eventually(async () => {
          const { rows } = await db.pool.query(
            `SELECT count(*)::int AS n FROM ${db.s}.jobs WHERE id = ANY($1::bigint[]) AND state = 'succeeded'`,
            [ids],
          );
          return rows[0].n === ids.length;
        }, 'the prefetch queue drained');
      } finally {
        await sup.stop();
      }
      const { rows } = await db.pool.query(`SELECT max(running)::int AS most FROM ${db.s}.prefetch_seen`);
      expect(rows[0].most).toBe(3);
    } finally {
      await db.pool.query(`DROP TRIGGER prefetch_count ON ${db.s}.jobs`);
    }
  });
});

describe('settings', () => {
  it('refuses bad limits with GRAPEVINE_QUEUE_LIMIT_INVALID naming the problem', async () => {
    const refused = async (settings: unknown) => {
      const err = await control.setQueue('bad', settings as never).catch((e) => e);
      expect(err).toBeInstanceOf(GrapevineError);
      expect(err.code).toBe('GRAPEVINE_QUEUE_LIMIT_INVALID');
      return String(err.message);
    };
    expect(await refused({ concurrency: 0 })).toMatch(/concurrency must be an integer from 1/);
    expect(await refused({ groupConcurrency: 1.5 })).toMatch(/groupConcurrency/);
    expect(await refused({ rate: '10 per second' })).toMatch(/N\/INTERVAL/);
    expect(await refused({ rate: '10/1y' })).toMatch(/N\/INTERVAL/);
    expect(await refused({ concurency: 3 })).toMatch(/unknown queue setting "concurency"/);
    expect(await refused({})).toMatch(/at least one/);
  });

  it('lists settings, jobs by state and the oldest due job; null removes a limit', async () => {
    await control.setQueue('listed', { concurrency: 2, rate: '10/m', groupConcurrency: 1 });
    await add('listed', [{}, {}]);
    const set = await control.setQueue('listed', { groupConcurrency: null });
    expect(set).toEqual({
      queue: 'listed',
      concurrency: 2,
      groupConcurrency: null,
      rate: { limit: 10, intervalMs: 60_000 },
      groupRate: null,
      paused: false,
    });
    const info = (await control.listQueues()).find((q) => q.queue === 'listed')!;
    expect(info.jobs.pending).toBe(2);
    expect(info.oldestPendingSeconds).toBeGreaterThanOrEqual(0);
  });
});

describe('freed slots', () => {
  it('are announced when a limited job finishes, and not for an unlimited one', async () => {
    await control.setQueue('announced', { concurrency: 1 });
    await add('announced', [{}]);
    await add('quiet', [{}]);
    const { listener, hints } = await listenForHints();
    try {
      const [quiet] = await claimNext(db.pool, db.schema, { ...claimer(1), limit: 1, queues: ['quiet'] });
      await complete([quiet.id]);
      const [limited] = await claimNext(db.pool, db.schema, { ...claimer(1), limit: 1, queues: ['announced'] });
      await listener.query('SELECT 1');
      expect(hints).toEqual([]);
      await complete([limited.id]);
      await eventually(() => hints.length > 0, 'the freed slot hint');
    } finally {
      await listener.end();
    }
  });
});

describe('grapevine queue and add --group', () => {
  const cli = (...args: string[]) => run([CLI, ...args, '--schema', db.schema], { DATABASE_URL: db.url });

  it('sets, lists, pauses and resumes a queue, and refuses a bad rate with its code', async () => {
    const set = await cli('queue', 'set', 'cli', '--concurrency', '4', '--group-concurrency', '1', '--rate', '10/s');
    expect(set.code).toBe(0);
    expect(set.stderr).toMatch(/queue "cli": concurrency 4, group concurrency 1, rate 10\/s/);
    const added = await cli('add', 't', '{}', '--queue', 'cli', '--group', 'customer-7');
    expect(added.code).toBe(0);
    const { rows } = await db.pool.query(`SELECT group_key FROM ${db.s}.jobs WHERE id = $1`, [added.stdout.trim()]);
    expect(rows[0].group_key).toBe('customer-7');
    expect((await cli('queue', 'pause', 'cli')).stderr).toMatch(/paused on every supervisor/);
    const listed = await cli('queue', 'list');
    expect(listed.stdout).toMatch(/^cli\s+yes\s+4\s+1\s+10\/s\s+-\s+1\s+0/m);
    const json = JSON.parse((await cli('queue', 'list', '--json')).stdout);
    expect(json.find((q: { queue: string }) => q.queue === 'cli')).toMatchObject({ paused: true, concurrency: 4, jobs: { pending: 1 } });
    expect((await cli('queue', 'resume', 'cli')).code).toBe(0);
    expect((await cli('queue', 'set', 'cli', '--concurrency', 'none')).stderr).toMatch(/concurrency -/);
    const bad = await cli('queue', 'set', 'cli', '--rate', '10/fortnight');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/rate must be N\/INTERVAL/);
    expect((await cli('queue', 'set', 'cli')).code).toBe(2);
  });
});
