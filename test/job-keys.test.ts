import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrapevineError, type Supervisor } from '../supervisor/public.ts';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';
import { CLI, ROOT, run } from './helpers/process.ts';

const db = useMigratedSchema('job_keys');
const { client, s } = db;
let supervisor: Supervisor;
const LATER = () => new Date(Date.now() + 3_600_000);
const MUCH_LATER = () => new Date(Date.now() + 7_200_000);

beforeAll(async () => {
  await client.migrate();
  supervisor = await startTestSupervisor(db);
});
afterAll(() => supervisor?.stop());

interface Row {
  id: string;
  state: string;
  payload: Record<string, unknown>;
  run_at: Date;
  key: string | null;
}

async function row(id: string): Promise<Row> {
  const { rows } = await db.pool.query<Row>(`SELECT id::text, state, payload, run_at, key FROM ${s}.jobs WHERE id = $1`, [id]);
  return rows[0];
}

async function jobsWithPayload(field: string, value: string): Promise<number> {
  const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM ${s}.jobs WHERE payload->>$1 = $2`, [field, value]);
  return rows[0].n;
}

/** A gate the gate-echo task waits at until the test opens it. */
async function gate(name: string): Promise<{ gate: string; open(): Promise<void> }> {
  await db.pool.query(`CREATE TABLE ${s}.${name} (open boolean NOT NULL); INSERT INTO ${s}.${name} VALUES (false)`);
  return { gate: `${s}.${name}`, open: async () => void (await db.pool.query(`UPDATE ${s}.${name} SET open = true`)) };
}

async function running(id: string): Promise<void> {
  await eventually(async () => (await row(id)).state === 'running', `job ${id} running`);
}

describe('job keys, each mode on a timeline', () => {
  it("replace (the default): a later enqueue replaces the pending job's payload and run time; once it runs, a new job is added", async () => {
    const g = await gate('gate_replace');
    const first = await client.addJob('gate-echo', { ...g, v: 1 }, { key: 'replace-1', runAt: LATER() });
    const later = MUCH_LATER();
    expect(await client.addJob('gate-echo', { ...g, v: 2 }, { key: 'replace-1', runAt: later })).toBe(first);
    expect(await row(first)).toMatchObject({ payload: { gate: g.gate, v: 2 }, run_at: later, state: 'pending' });

    await client.runDueNow([first]);
    await running(first);
    // The key left the job when it started: this enqueue adds a job, and the running one keeps what it claimed.
    const second = await client.addJob('gate-echo', { ...g, v: 3 }, { key: 'replace-1', runAt: LATER() });
    expect(second).not.toBe(first);
    expect(await row(first)).toMatchObject({ payload: { gate: g.gate, v: 2 }, key: null, state: 'running' });
    await g.open();
    expect((await client.waitForJob(first)).result).toEqual({ gate: g.gate, v: 2 });
    expect(await client.addJob('gate-echo', { ...g, v: 4 }, { key: 'replace-1', runAt: LATER() })).toBe(second);
    expect((await row(second)).payload).toEqual({ gate: g.gate, v: 4 });
  });

  it('replace: a debounce that brings the run time forward wakes a supervisor for it', async () => {
    const id = await client.addJob('noop', { v: 1 }, { key: 'debounce-now', runAt: LATER() });
    expect(await client.addJob('noop', { v: 2 }, { key: 'debounce-now' })).toBe(id);
    expect(await client.waitForJob(id)).toMatchObject({ state: 'succeeded', payload: { v: 2 } });
  });

  it('replace: the same job again writes no new row version, and a job already due keeps its run time', async () => {
    // A task no supervisor handles, so the job stays pending.
    const same = { task: 'keys-unhandled', payload: { v: 1 }, key: 'same-again' };
    const version = async (id: string) => (await db.pool.query(`SELECT xmin::text, ctid::text FROM ${s}.jobs WHERE id = $1`, [id])).rows[0];
    const id = await client.addJob(same.task, same.payload, { key: same.key });
    const written = await version(id);
    const dueAt = (await row(id)).run_at;

    expect(await client.addJob(same.task, same.payload, { key: same.key })).toBe(id);
    expect(await client.addJobs([same, { ...same, key: 'same-again-2' }])).toEqual([id, expect.any(String)]);
    expect(await version(id)).toEqual(written);

    // Something else to replace: replaced, and the due job keeps its place among the due jobs.
    expect(await client.addJob(same.task, { v: 2 }, { key: same.key })).toBe(id);
    expect(await version(id)).not.toEqual(written);
    expect(await row(id)).toMatchObject({ payload: { v: 2 }, run_at: dueAt, state: 'pending' });
  });

  it('replace: the same job again is answered without waiting for a transaction that holds the row', async () => {
    const id = await client.addJob('keys-unhandled', { v: 1 }, { key: 'same-while-locked' });
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM ${s}.jobs WHERE id = $1 FOR UPDATE`, [id]);
      // A replace would wait for the lock; one that changes nothing reads the committed row.
      expect(await client.addJob('keys-unhandled', { v: 1 }, { key: 'same-while-locked' })).toBe(id);
      await holder.query('ROLLBACK');
    } finally {
      await holder.end();
    }
  });

  it('preserve_run_at: the payload is replaced, the first run time stays', async () => {
    const runAt = LATER();
    const id = await client.addJob('noop', { v: 1 }, { key: 'preserve-1', keyMode: 'preserve_run_at', runAt });
    expect(await client.addJob('noop', { v: 2 }, { key: 'preserve-1', keyMode: 'preserve_run_at', runAt: MUCH_LATER() })).toBe(id);
    expect(await row(id)).toMatchObject({ payload: { v: 2 }, run_at: runAt });
  });

  it('dedupe: a later enqueue while the job is pending changes nothing; once it runs, a new job is added', async () => {
    const g = await gate('gate_dedupe');
    const runAt = LATER();
    const first = await client.addJob('gate-echo', { ...g, v: 1 }, { key: 'dedupe-1', keyMode: 'dedupe', runAt });
    expect(await client.addJob('gate-echo', { ...g, v: 2 }, { key: 'dedupe-1', keyMode: 'dedupe' })).toBe(first);
    expect(await row(first)).toMatchObject({ payload: { v: 1 }, run_at: runAt });
    await client.runDueNow([first]);
    await running(first);
    const second = await client.addJob('gate-echo', { ...g, v: 3 }, { key: 'dedupe-1', keyMode: 'dedupe', runAt: LATER() });
    expect(second).not.toBe(first);
    await g.open();
    expect((await client.waitForJob(first)).result).toMatchObject({ v: 1 });
  });

  it('dedupe_running: the key holds while the job runs and is free once it finished', async () => {
    const g = await gate('gate_running');
    const first = await client.addJob('gate-echo', { ...g, v: 1 }, { key: 'running-1', keyMode: 'dedupe_running' });
    await running(first);
    expect(await client.addJob('gate-echo', { ...g, v: 2 }, { key: 'running-1', keyMode: 'dedupe_running' })).toBe(first);
    await g.open();
    expect((await client.waitForJob(first)).result).toMatchObject({ v: 1 });
    const second = await client.addJob('gate-echo', { ...g, v: 3 }, { key: 'running-1', keyMode: 'dedupe_running' });
    expect(second).not.toBe(first);
    await client.waitForJob(second);
  });

  it('throttle: the key holds for the window after the first enqueue, finished or not', async () => {
    const opts = { key: 'throttle-1', keyMode: 'throttle', keyWindowMs: 3_600_000 } as const;
    const first = await client.addJob('noop', { v: 1 }, opts);
    await client.waitForJob(first);
    expect(await client.addJob('noop', { v: 2 }, opts)).toBe(first);
    // The window's end, without waiting an hour for it.
    await db.pool.query(`UPDATE ${s}.jobs SET key_until = now() WHERE id = $1`, [first]);
    const second = await client.addJob('noop', { v: 3 }, opts);
    expect(second).not.toBe(first);
    expect(await row(first)).toMatchObject({ key: null, payload: { v: 1 } });
    expect(await client.addJob('noop', { v: 4 }, opts)).toBe(second);
  });

  it('refuses a mode it does not know, a window without throttle and throttle without a window', async () => {
    const refused = [
      { key: 'x', keyMode: 'sometimes' as never },
      { key: 'x', keyWindowMs: 1000 },
      { key: 'x', keyMode: 'throttle' as const },
      { keyMode: 'dedupe' as const },
      { key: '' },
    ];
    for (const opts of refused) {
      await expect(client.addJob('noop', {}, opts)).rejects.toSatisfy(
        (e) => e instanceof GrapevineError && e.code === 'GRAPEVINE_PAYLOAD_INVALID',
      );
    }
  });
});

describe('job keys under concurrent enqueuers', () => {
  it('transactions: the first holder rolls back, the waiting ones get one job between them', async () => {
    const conns = await Promise.all(
      [1, 2, 3].map(async () => {
        const c = new pg.Client({ connectionString: db.url });
        await c.connect();
        await c.query('BEGIN');
        return c;
      }),
    );
    try {
      const [a, b, c] = conns;
      const rolledBack = await client.addJob('noop', { by: 'a' }, { key: 'tx-1', runAt: LATER(), db: a });
      const waiting = [b, c].map((conn, i) =>
        client.addJob('noop', { by: `w${i}` }, { key: 'tx-1', runAt: LATER(), db: conn }).then(async (id) => {
          await conn.query('COMMIT');
          return id;
        }),
      );
      // Both wait on a's uncommitted row before it goes away.
      await eventually(async () => {
        const { rows } = await db.pool.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid = ANY($1)`,
          [[b, c].map((conn) => (conn as unknown as { processID: number }).processID)],
        );
        return rows[0].n === 2;
      }, 'both enqueuers waiting on the first');
      await a.query('ROLLBACK');
      const [idB, idC] = await Promise.all(waiting);
      expect(idB).toBe(idC);
      expect(await row(rolledBack)).toBeUndefined();
      const { rows } = await db.pool.query(`SELECT id::text FROM ${s}.jobs WHERE key = 'tx-1'`);
      expect(rows).toEqual([{ id: idB }]);
    } finally {
      await Promise.all(conns.map((c) => c.end()));
    }
  });

  it('processes: four processes enqueueing the same keys by addJob and addJobs get one job per key', async () => {
    const keys = Array.from({ length: 40 }, (_, i) => `proc-${i}`);
    const entry = path.join(ROOT, 'dist/supervisor/public.js');
    const script = path.join(ROOT, 'test/fixtures/keyed-enqueuer.mjs');
    const outputs = await Promise.all([1, 2, 3, 4].map(() => run([script, entry, db.url, db.schema, JSON.stringify(keys)])));
    const byProcess = outputs.map((out) => {
      expect(out.stderr).toBe('');
      return JSON.parse(out.stdout) as Record<string, string[]>;
    });
    const { rows } = await db.pool.query<{ key: string; ids: string[] }>(
      `SELECT key, array_agg(id::text) AS ids FROM ${s}.jobs WHERE key LIKE 'proc-%' GROUP BY key`,
    );
    expect(rows).toHaveLength(keys.length);
    for (const { key, ids } of rows) {
      expect(ids).toHaveLength(1);
      // Every enqueue of the key, in every process, answered with that one job.
      expect(new Set(byProcess.flatMap((p) => p[key]))).toEqual(new Set(ids));
    }
  });
});

describe('job keys from SQL and the CLI', () => {
  it('add_job() takes key, key_mode and key_window by name', async () => {
    const q = (sql: string) => db.pool.query(sql).then((r) => String(r.rows[0].id));
    const first = await q(
      `SELECT ${s}.add_job('noop', '{"v": 1}', run_at => now() + interval '1 hour', key => 'sql-1', key_mode => 'dedupe') AS id`,
    );
    expect(await q(`SELECT ${s}.add_job('noop', '{"v": 2}', key => 'sql-1', key_mode => 'dedupe') AS id`)).toBe(first);
    expect(await q(`SELECT ${s}.add_job('noop', '{"v": 3}', run_at => now() + interval '1 hour', key => 'sql-1') AS id`)).toBe(first);
    expect((await row(first)).payload).toEqual({ v: 3 });
    const throttled = await q(`SELECT ${s}.add_job('noop', key => 'sql-2', key_mode => 'throttle', key_window => interval '1 hour') AS id`);
    expect(await q(`SELECT ${s}.add_job('noop', key => 'sql-2', key_mode => 'throttle', key_window => interval '1 hour') AS id`)).toBe(
      throttled,
    );
    await expect(db.pool.query(`SELECT ${s}.add_job('noop', key => 'sql-3', key_mode => 'often')`)).rejects.toThrow(
      /unknown key_mode 'often'/,
    );
    await expect(db.pool.query(`SELECT ${s}.add_job('noop', key => 'sql-3', key_mode => 'throttle')`)).rejects.toThrow(
      /key_window is the throttle's window/,
    );
  });

  it("add_jobs() takes keys in its objects, a key repeated in the array included, and keeps the array's order", async () => {
    const specs = [
      { task: 'noop', payload: { v: 1 }, key: 'bulk-1', run_at: LATER() },
      { task: 'noop', payload: { v: 2 } },
      { task: 'noop', payload: { v: 3 }, key: 'bulk-1', run_at: LATER() },
      { task: 'noop', payload: { v: 4 }, key: 'bulk-2', key_mode: 'dedupe', run_at: LATER() },
      { task: 'noop', payload: { v: 5 }, key: 'bulk-2', key_mode: 'dedupe', run_at: LATER() },
    ];
    const { rows } = await db.pool.query(`SELECT id::text FROM ${s}.add_jobs($1::jsonb) AS id`, [JSON.stringify(specs)]);
    const ids = rows.map((r) => r.id as string);
    expect(new Set(ids).size).toBe(3);
    expect(ids[2]).toBe(ids[0]);
    expect(ids[4]).toBe(ids[3]);
    expect((await row(ids[0])).payload).toEqual({ v: 3 });
    expect((await row(ids[3])).payload).toEqual({ v: 4 });
    expect(await jobsWithPayload('v', '2')).toBeGreaterThan(0);
  });

  it('one add_jobs() call settles new keys, held keys and keys whose job no longer holds them, in every mode', async () => {
    const later = LATER();
    const [a, b, c, d] = await client.addJobs([
      { task: 'noop', payload: { v: 1 }, key: 'mix-a', runAt: later },
      { task: 'noop', payload: { v: 1 }, key: 'mix-b', keyMode: 'dedupe', runAt: later },
      { task: 'noop', payload: { v: 1 }, key: 'mix-c', runAt: later },
      { task: 'noop', payload: { v: 1 }, key: 'mix-d', keyMode: 'throttle', keyWindowMs: 3_600_000, runAt: later },
    ]);
    // c has run (it no longer holds its key); d has too, but a throttle holds for its window.
    await db.pool.query(`UPDATE ${s}.jobs SET state = 'succeeded', attempts = 1, finished_at = now() WHERE id = ANY($1::bigint[])`, [
      [c, d],
    ]);
    const muchLater = MUCH_LATER();
    const ids = await client.addJobs([
      { task: 'noop', payload: { v: 2 }, key: 'mix-a', runAt: muchLater },
      { task: 'noop', payload: { v: 2 }, key: 'mix-b', keyMode: 'dedupe' },
      { task: 'noop', payload: { v: 2 }, key: 'mix-c', runAt: later },
      { task: 'noop', payload: { v: 2 }, key: 'mix-d', keyMode: 'throttle', keyWindowMs: 3_600_000 },
      { task: 'noop', payload: { v: 2 }, key: 'mix-e', keyMode: 'dedupe', runAt: later },
    ]);
    expect(ids.slice(0, 2)).toEqual([a, b]);
    expect(ids[3]).toBe(d);
    expect(new Set([a, b, c, d, ids[2], ids[4]]).size).toBe(6);
    expect(await row(a)).toMatchObject({ payload: { v: 2 }, run_at: muchLater, key: 'mix-a' });
    expect(await row(b)).toMatchObject({ payload: { v: 1 }, run_at: later });
    expect(await row(c)).toMatchObject({ payload: { v: 1 }, key: null, state: 'succeeded' });
    expect(await row(ids[2])).toMatchObject({ payload: { v: 2 }, key: 'mix-c', state: 'pending' });
    expect(await row(d)).toMatchObject({ payload: { v: 1 }, key: 'mix-d' });
    expect(await row(ids[4])).toMatchObject({ payload: { v: 2 }, key: 'mix-e' });
  });

  it("a replacing enqueue is held to the schema's payload limit like an insert", async () => {
    const id = await client.addJob('noop', {}, { key: 'limit-1', runAt: LATER() });
    await db.pool.query(`UPDATE ${s}.settings SET max_payload_bytes = 1024`);
    try {
      const big = JSON.stringify({ text: 'x'.repeat(2000) });
      await expect(db.pool.query(`SELECT ${s}.add_job('noop', $1, key => 'limit-1')`, [big])).rejects.toThrow(/over the 1024-byte limit/);
      expect((await row(id)).payload).toEqual({});
    } finally {
      await db.pool.query(`UPDATE ${s}.settings SET max_payload_bytes = DEFAULT`);
    }
  });

  it('grapevine add --key prints the id of the job holding the key', async () => {
    const add = (payload: string) =>
      run([
        CLI,
        'add',
        'noop',
        payload,
        '--key',
        'cli-1',
        '--key-mode',
        'dedupe',
        '--run-at',
        LATER().toISOString(),
        '--database-url',
        db.url,
        '--schema',
        db.schema,
      ]);
    const first = await add('{"v": 1}');
    expect(first.stderr).toBe('');
    const second = await add('{"v": 2}');
    expect(second.stdout.trim()).toBe(first.stdout.trim());
    expect((await row(first.stdout.trim())).payload).toEqual({ v: 1 });
  });
});
