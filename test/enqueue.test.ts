import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { createClient, GrapevineError } from '../supervisor/public.ts';
import { directDatabaseUrl, useTestSchema } from './helpers/db.ts';

const db = useTestSchema('enqueue');
const client = createClient({ connectionString: db.url, schema: db.schema });
afterAll(() => client.close());

/** A LISTEN connection that collects every payload on a channel. */
async function listen(channel: string): Promise<{ payloads: string[]; close(): Promise<void>; flush(): Promise<void> }> {
  // Direct even in the pooled pass: a LISTEN through a pooler in transaction mode hears nothing.
  const c = new pg.Client({ connectionString: directDatabaseUrl() });
  await c.connect();
  const payloads: string[] = [];
  c.on('notification', (m) => payloads.push(m.payload ?? ''));
  await c.query(`LISTEN "${channel}"`);
  return {
    payloads,
    close: () => c.end(),
    // A round trip on the listening connection delivers anything already committed.
    flush: async () => {
      await c.query('SELECT 1');
    },
  };
}

describe('addJob', () => {
  it('inserts a pending job with its options and returns its id', async () => {
    const runAt = new Date(Date.now() + 3_600_000);
    const id = await client.addJob('square', { n: 4 }, { priority: 5, queue: 'math', maxAttempts: 3, runAt });
    const job = await client.getJob(id);
    expect(job).toMatchObject({
      id,
      task: 'square',
      queue: 'math',
      state: 'pending',
      priority: 5,
      maxAttempts: 3,
      attempts: 0,
      payload: { n: 4 },
    });
    expect(job!.runAt.toISOString()).toBe(runAt.toISOString());
  });

  it('enqueues inside the caller transaction: commit keeps it and notifies, rollback leaves nothing', async () => {
    const listener = await listen(`${db.schema}_jobs`);
    const conn = new pg.Client({ connectionString: db.url });
    await conn.connect();
    try {
      await conn.query('BEGIN');
      const rolledBack = await client.addJob('square', { n: 1 }, { db: conn });
      await conn.query('ROLLBACK');
      await listener.flush();
      expect(await client.getJob(rolledBack)).toBeNull();
      expect(listener.payloads).toEqual([]);

      await conn.query('BEGIN');
      const committed = await client.addJob('square', { n: 2 }, { db: conn });
      await listener.flush();
      expect(listener.payloads).toEqual([]); // nothing before commit
      await conn.query('COMMIT');
      await listener.flush();
      expect(listener.payloads).toEqual([committed]);
    } finally {
      await conn.end();
      await listener.close();
    }
  });

  it('rejects bad input with one clear error before touching the database', async () => {
    const cases: Array<[() => Promise<unknown>, RegExp]> = [
      [() => client.addJob('square', { big: 1n }), /not JSON-serializable/],
      [() => client.addJob('square', {}, { runAt: 'tomorrow-ish' }), /runAt .* not a valid time/],
      [() => client.addJob('bad name!', {}), /invalid task name/],
      [() => client.addJob('square', {}, { maxAttempts: 0 }), /maxAttempts must be an integer from 1/],
      [() => client.addJob('square', { blob: 'x'.repeat(2 * 1024 * 1024) }), /over the 1048576-byte limit/],
    ];
    for (const [call, message] of cases) {
      const err = await call().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(GrapevineError);
      expect((err as Error).message).toMatch(message);
    }
    const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM "${db.schema}".jobs WHERE task = 'bad name!'`);
    expect(rows[0].n).toBe(0);
  });

  it('refuses what PostgreSQL cannot store (NUL, a lone surrogate, runAt infinity or past year 9999) with GRAPEVINE_PAYLOAD_INVALID, not a raw error', async () => {
    const before = (await db.pool.query(`SELECT count(*)::int AS n FROM "${db.schema}".jobs`)).rows[0].n;
    const cases: Array<[() => Promise<unknown>, RegExp]> = [
      [() => client.addJob('square', { text: 'a\u0000b' }), /payload of task "square" holds a NUL character .*encode binary data/],
      [() => client.addJob('square', { 'k\u0000': 1 }), /holds a NUL character/],
      [
        () => client.addJob('square', { text: 'cut \ud83d' }),
        /payload of task "square" holds a lone UTF-16 surrogate \(\\ud83d .*code-point boundaries/,
      ],
      [
        () => client.addJobs([{ task: 'square' }, { task: 'fail', payload: ['\udc00'] }]),
        /payload of task "fail" holds a lone UTF-16 surrogate \(\\udc00/,
      ],
      [() => client.addJob('square', {}, { runAt: 'infinity' }), /runAt of task "square" is not a valid time \("infinity"\)/],
      [
        () => client.addJob('square', {}, { runAt: '+275001-01-01T00:00:00Z' }),
        /runAt of task "square" is in the year 275001 .*from year 1 to 9999/,
      ],
      [() => client.addJobs([{ task: 'square', runAt: new Date(Date.UTC(10_000, 0, 1)) }]), /runAt of task "square" is in the year 10000/],
    ];
    for (const [call, message] of cases) {
      const err = await call().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(GrapevineError);
      expect(err).toMatchObject({ code: 'GRAPEVINE_PAYLOAD_INVALID' });
      expect((err as Error).message).toMatch(message);
    }
    // An escaped backslash before "u0000" is plain text, and a whole emoji is fine.
    const fine = await client.addJob('square', { text: '\\u0000 \ud83d\ude00', at: 'x' }, { runAt: new Date(Date.UTC(9999, 11, 31)) });
    expect((await client.getJob(fine))!.payload).toEqual({ text: '\\u0000 \ud83d\ude00', at: 'x' });
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM "${db.schema}".jobs`)).rows[0].n).toBe(before + 1);
  });
});

describe('addJobs', () => {
  it('inserts 20,000 jobs in a few statements and batches their ids into a few notifications under 8,000 bytes', async () => {
    const listener = await listen(`${db.schema}_jobs`);
    try {
      const ids = await client.addJobs(Array.from({ length: 20_000 }, (_, n) => ({ task: 'square', payload: { n } })));
      expect(ids).toHaveLength(20_000);
      expect(new Set(ids).size).toBe(20_000);
      await listener.flush();
      expect(listener.payloads.length).toBeGreaterThan(0);
      expect(listener.payloads.length).toBeLessThan(20);
      for (const p of listener.payloads) expect(Buffer.byteLength(p)).toBeLessThan(8_000);
      // Every inserted id is covered by some notification.
      const covered = new Set<string>();
      for (const payload of listener.payloads) {
        for (const token of payload.split(',')) {
          const [first, last = first] = token.split('-').map(Number);
          for (let id = first; id <= last; id++) covered.add(String(id));
        }
      }
      for (const id of ids) expect(covered.has(id)).toBe(true);
    } finally {
      await listener.close();
    }
  });

  it('keeps the order of the input in the returned ids', async () => {
    const ids = await client.addJobs([
      { task: 'a', payload: { i: 0 } },
      { task: 'b', payload: { i: 1 } },
      { task: 'c', payload: { i: 2 } },
    ]);
    const { rows } = await db.pool.query(`SELECT id::text, task FROM "${db.schema}".jobs WHERE id = ANY($1::bigint[]) ORDER BY id`, [ids]);
    expect(rows.map((r) => r.task)).toEqual(['a', 'b', 'c']);
    expect(rows.map((r) => r.id)).toEqual(ids);
  });
});

describe('SQL add_job()', () => {
  it('enqueues from SQL with named defaults and notifies at commit', async () => {
    const listener = await listen(`${db.schema}_jobs`);
    try {
      const { rows } = await db.pool.query(`SELECT "${db.schema}".add_job('square', '{"n": 9}', max_attempts => 2) AS id`);
      const id = String(rows[0].id);
      const job = await client.getJob(id);
      expect(job).toMatchObject({ task: 'square', queue: 'default', maxAttempts: 2, state: 'pending', payload: { n: 9 } });
      await listener.flush();
      expect(listener.payloads).toContain(id);
    } finally {
      await listener.close();
    }
  });

  it('tells supervisors when a delayed job becomes due instead of its id', async () => {
    const listener = await listen(`${db.schema}_jobs`);
    try {
      const runAt = new Date(Date.now() + 60_000);
      await client.addJob('square', {}, { runAt });
      await listener.flush();
      expect(listener.payloads).toEqual([`at:${runAt.getTime()}`]);
    } finally {
      await listener.close();
    }
  });
});
