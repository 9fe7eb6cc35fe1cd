import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, startSupervisor, type Supervisor } from '../supervisor/public.ts';
import { eventually, FIXTURE_TASKS, useTestSchema } from './helpers/db.ts';
import { capturingLogger } from './helpers/logs.ts';
import { useOwnRole } from './helpers/role.ts';

// Notification payloads are untrusted input: anyone who can connect may NOTIFY.
const db = useTestSchema('notify');
// Our own login role: other test files' supervisors share the server.
const role = useOwnRole(db, 'notify');
const client = createClient({ connectionString: db.url, schema: db.schema });
const log = capturingLogger('info');
const ledger = `"${db.schema}".ledger`;
const jobsChannel = `${db.schema}_jobs`;
let sup: Supervisor;

beforeAll(async () => {
  await client.migrate();
  await db.pool.query(`CREATE TABLE ${ledger} (job_id bigint, attempt int, PRIMARY KEY (job_id, attempt))`);
  sup = await startSupervisor({
    connectionString: role.url,
    schema: db.schema,
    tasks: FIXTURE_TASKS,
    threads: 2,
    concurrency: 4,
    logger: log.logger,
  });
});
afterAll(async () => {
  await sup.stop({ graceMs: 0 });
  await client.close();
});

const notify = (channel: string, payloads: string[]) =>
  db.pool.query(`SELECT pg_notify($1, p) FROM unnest($2::text[]) p`, [channel, payloads]);

describe('untrusted notifications', () => {
  it('runs each job once however often its id is notified', async () => {
    const ids = await client.addJobs(Array.from({ length: 200 }, () => ({ task: 'ledger', payload: { table: ledger } })));
    // Each id twice more, one notification per id and one batch with all of them.
    await notify(jobsChannel, [...ids, ids.join(',')]);
    await Promise.all(ids.map((id) => client.waitForJob(id)));
    const { rows } = await db.pool.query(`SELECT job_id, count(*)::int AS n FROM ${ledger} GROUP BY job_id HAVING count(*) > 1`);
    expect(rows).toEqual([]);
    const { rows: all } = await db.pool.query(`SELECT count(*)::int AS n FROM ${ledger}`);
    expect(all[0].n).toBe(200);
    // Every copy was heard (the batch notification counts each id once more).
    expect(sup.status().counters.notifiedIds).toBeGreaterThanOrEqual(600);
  });

  it('counts and ignores malformed payloads with rate-limited warnings, and keeps running valid jobs', async () => {
    const junk = [
      'not json at all',
      '{"type":"cancel"}',
      '-5',
      '0',
      '1-',
      '-',
      '12,,13',
      '9007199254740993',
      '5-3',
      'at:nope',
      'at:-1',
      'x'.repeat(7_999),
      '1e3',
      ' 7',
      '７',
      '\u0001',
      'null',
      '[1,2]',
    ];
    const before = sup.status().counters.malformedNotifications;
    const rounds = 500;
    for (let i = 0; i < rounds; i++) await notify(jobsChannel, junk);
    await notify(`${db.schema}_control`, ['not json', '{"type":"bogus"}', '{"type":"cancel","job":{}}']);
    const expected = before + rounds * junk.length + 3;
    await eventually(() => sup.status().counters.malformedNotifications >= expected, 'all junk to be counted');
    expect(sup.status().counters.malformedNotifications).toBe(expected);
    const warnings = log.lines().filter((l) => l.msg === 'ignored a malformed notification');
    expect(warnings.length).toBeGreaterThan(0);
    expect(warnings.length).toBeLessThan(100); // about one a second, not one per payload
    const id = await client.addJob('square', { n: 49 });
    expect((await client.waitForJob(id)).result).toMatchObject({ root: 7 });
  });

  it('claims nothing and leaves no lock or open transaction for missing, finished or cancelled jobs', async () => {
    const done = await client.addJob('square', { n: 1 });
    await client.waitForJob(done);
    const cancelled = await client.addJob('square', { n: 2 }, { runAt: new Date(Date.now() + 3_600_000) });
    await client.cancelJob(cancelled);
    const snapshot = async () =>
      (
        await db.pool.query(`SELECT id, state, attempts, claim_token FROM "${db.schema}".jobs WHERE id = ANY($1::bigint[]) ORDER BY id`, [
          [done, cancelled],
        ])
      ).rows;
    const before = await snapshot();
    const claimedBefore = sup.status().counters.claimed;
    const wastedBefore = sup.status().counters.wastedClaims;
    await notify(jobsChannel, [done, cancelled, '999999999', `${done},${cancelled},424242`]);
    await eventually(
      () => sup.status().counters.wastedClaims > wastedBefore && sup.status().inFlight === 0,
      'the ids to be tried and skipped',
    );
    expect(await snapshot()).toEqual(before);
    expect(sup.status().counters.claimed).toBe(claimedBefore);
    // Claims run on the threads' connections, one statement each: between
    // statements none of them may hold a lock on the jobs table or sit inside
    // a transaction. (The supervisor's own connection takes locks while its
    // heartbeat and reaper run; those come and go.)
    const { rows: leaked } = await db.pool.query(
      `SELECT count(l.pid)::int AS locks,
              count(DISTINCT a.pid) FILTER (WHERE a.state LIKE 'idle in transaction%')::int AS open_transactions
         FROM pg_stat_activity a
         LEFT JOIN pg_locks l ON l.pid = a.pid
              AND l.relation IN (SELECT oid FROM pg_class WHERE relname = 'jobs' AND relnamespace = $2::regnamespace)
        WHERE a.usename = $1 AND a.application_name LIKE 'grapevine-thread-%' AND a.state <> 'active'
          AND (l.pid IS NOT NULL OR a.state LIKE 'idle in transaction%')`,
      [role.name, db.schema],
    );
    expect(leaked[0]).toEqual({ locks: 0, open_transactions: 0 });
  });

  it('holds no more than its capacity however many ids a flood names, and memory stays flat', async () => {
    global.gc?.();
    const rssBefore = process.memoryUsage().rss;
    // Huge ranges cost nothing to hold: they are never expanded beyond free capacity.
    const flood = Array.from({ length: 2_000 }, (_, i) => `${i * 1_000_000 + 1}-${(i + 1) * 1_000_000},9007199254740990-9007199254740991`);
    for (let i = 0; i < 50; i++) await notify(jobsChannel, flood);
    await eventually(() => sup.status().counters.notifiedIds > 0 && sup.status().inFlight === 0, 'the flood to drain');
    expect(sup.status().inFlight).toBeLessThanOrEqual(8);
    const growthMb = (process.memoryUsage().rss - rssBefore) / 1024 / 1024;
    expect(growthMb).toBeLessThan(50);
    const id = await client.addJob('square', { n: 9 });
    expect((await client.waitForJob(id)).state).toBe('succeeded');
  });
});
