import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { createClient, createControl, type GrapevineError, startSupervisor, type Supervisor } from '../supervisor/public.ts';
import { migrations } from '../src/schema/files.ts';
import { grantRole, grantSql } from '../src/schema/roles.ts';
import type { Queryable, TypedQuery } from '../src/db.ts';
import type { JobState } from '../src/job.ts';
import * as control from '../src/sql/control.ts';
import * as dashboard from '../src/sql/dashboard.ts';
import * as jobs from '../src/sql/jobs.ts';
import * as ops from '../src/sql/operations.ts';
import * as schedules from '../src/sql/schedules.ts';
import { watchProgress, writeProgress } from '../src/sql/progress.ts';
import { payloadLimit } from '../src/sql/settings.ts';
import * as sups from '../src/sql/supervisors.ts';
import { eventually, FIXTURE_TASKS, testLogger, useMigratedSchema } from './helpers/db.ts';
import { CLI, run } from './helpers/process.ts';
import { sqlstateAs, useOwnRole, type OwnRole } from './helpers/role.ts';

/**
 * The three kinds of role `grapevine grant` sets up, each used end to end by
 * a real login role that has nothing else: no superuser, no ownership, no
 * right the grant did not give.
 */
const db = useMigratedSchema('roles');
const enqueuer = useOwnRole(db, 'enq', { superuser: false, as: 'enqueuer' });
const worker = useOwnRole(db, 'wrk', { superuser: false, as: 'worker' });
const operator = useOwnRole(db, 'op', { superuser: false, as: 'operator' });
const nobody = useOwnRole(db, 'nobody', { superuser: false });
const fromCli = useOwnRole(db, 'cli', { superuser: false });

let supervisor: Supervisor | undefined;
const closers: Array<() => Promise<unknown>> = [];

afterAll(async () => {
  await supervisor?.stop({ graceMs: 1_000 });
  for (const close of closers) await close().catch(() => {});
});

function clientAs(role: OwnRole) {
  const client = createClient({ connectionString: role.url, schema: db.schema });
  closers.push(() => client.close());
  return client;
}

async function stateOf(id: string): Promise<string | undefined> {
  const { rows } = await db.pool.query(`SELECT state FROM ${db.s}.jobs WHERE id = $1`, [id]);
  return rows[0]?.state;
}

const DENIED = '42501';

describe('grapevine grant', () => {
  it('prints the SQL of each kind without connecting, and refuses an unknown kind or a role that does not exist', async () => {
    const enqueue = grantSql({ schema: db.schema, role: 'app', as: 'enqueuer' });
    expect(enqueue).toContain(
      `GRANT EXECUTE ON FUNCTION ${db.s}.add_job(text, jsonb, text, timestamptz, integer, integer, integer, text, text, interval, bigint[], text, text), ${db.s}.add_jobs(jsonb)`,
    );
    // No right on any table but the three read-only ones every kind reads.
    expect(enqueue.match(/ON TABLE [^;]*/g)).toEqual([`ON TABLE ${db.s}.migrations, ${db.s}.schema_functions, ${db.s}.settings TO "app"`]);
    expect(grantSql({ schema: db.schema, role: 'w', as: 'worker' })).toContain(
      `GRANT SELECT, UPDATE, DELETE, INSERT (task, payload, queue, priority, max_attempts, max_attempts_given, run_at, schedule, scheduled_for) ON TABLE ${db.s}.jobs TO "w"`,
    );
    const operate = grantSql({ schema: db.schema, role: 'o', as: 'operator' });
    expect(operate).toContain(`${db.s}.cancel_job(bigint)`);
    // It reads the jobs and acts on them through functions only.
    expect(operate.match(/GRANT [^;]* ON TABLE [^;]*\.jobs TO [^;]*/g)).toEqual([`GRANT SELECT ON TABLE ${db.s}.jobs TO "o"`]);
    expect(operate).toContain(`${db.s}.retry_jobs(bigint[]), ${db.s}.reschedule_jobs(bigint[], timestamptz)`);
    for (const sql of grantSqlOfEachKind()) expect(sql).not.toMatch(/\b(CREATE|ALTER|DROP|TRUNCATE|REFERENCES|TRIGGER)\b/);

    const unknownKind = await grantRole({ connectionString: db.url, schema: db.schema, role: nobody.name, as: 'admin' }).catch(
      (e: unknown) => e,
    );
    expect((unknownKind as GrapevineError).code).toBe('GRAPEVINE_CONFIG_INVALID');
    expect((unknownKind as Error).message).toMatch(/unknown kind of role "admin": use --as enqueuer, --as worker, --as operator/);
    const missing = await grantRole({ connectionString: db.url, schema: db.schema, role: `${nobody.name}_x`, as: 'worker' }).catch(
      (e: unknown) => e,
    );
    expect((missing as GrapevineError).code).toBe('GRAPEVINE_CONFIG_INVALID');
    expect((missing as Error).message).toContain(`role "${nobody.name}_x" does not exist: create it first`);
  });

  it('grapevine grant gives a role its kind from the command line, and --print only prints', async () => {
    const printed = await run([CLI, 'grant', fromCli.name, '--as', 'enqueuer', '--print', '--schema', db.schema], {
      DATABASE_URL: undefined,
    });
    expect(printed.code).toBe(0);
    expect(printed.stdout.trim()).toBe(grantSql({ schema: db.schema, role: fromCli.name, as: 'enqueuer' }).trim());
    expect(await sqlstateAs(fromCli, `SELECT ${db.s}.add_job('square')`)).toBe(DENIED);

    const granted = await run([CLI, 'grant', fromCli.name, '--as', 'enqueuer', '--schema', db.schema, '--database-url', db.url]);
    expect(granted.code, granted.stderr).toBe(0);
    expect(await clientAs(fromCli).addJob('square', { n: 3 })).toMatch(/^\d+$/);
    expect(await sqlstateAs(fromCli, `SELECT 1 FROM ${db.s}.jobs`)).toBe(DENIED);

    const bad = await run([CLI, 'grant', fromCli.name, '--as', 'admin', '--print']);
    expect([bad.code, bad.stderr.trim()]).toEqual([
      1,
      'grapevine: unknown kind of role "admin": use --as enqueuer, --as worker, --as operator',
    ]);
  });

  it('refuses, with GRAPEVINE_PERMISSION_DENIED, a role that does not own the schema', async () => {
    const err = await grantRole({ connectionString: enqueuer.url, schema: db.schema, role: nobody.name, as: 'worker' }).catch(
      (e: unknown) => e,
    );
    expect((err as GrapevineError).code).toBe('GRAPEVINE_PERMISSION_DENIED');
    expect((err as Error).message).toContain(`role "${enqueuer.name}" may not grant rights on schema "${db.schema}"`);
    expect(await sqlstateAs(nobody, `SELECT 1 FROM ${db.s}.jobs`)).toBe(DENIED);
  });
});

function grantSqlOfEachKind(): string[] {
  return (['enqueuer', 'worker', 'operator'] as const).map((as) => grantSql({ schema: db.schema, role: 'r', as }));
}

/** One statement of grapevine's, by the name of its typed function, and a call of it. */
type Use = [name: string, call: (db: Queryable, schema: string) => Promise<unknown>];

/**
 * Every statement each side runs, with arguments that make it do its work
 * (on rows that may not be there): the grants are read from this list, and
 * it proves each kind has what its side needs.
 */
function statementsOf(kind: 'enqueuer' | 'worker' | 'operator'): Use[] {
  const job = { task: 'square', payload: '{}', queue: 'default', run_at: null, priority: 0, max_attempts: 5, timeout_ms: null };
  const claim = { tasks: ['square'], queues: null, owner: 'w', thread: 1, leaseMs: 1000 };
  const tickJob = { task: 'square', payload: {}, queue: 'default', priority: 0, max_attempts: 5 };
  const schedule = { name: 'nightly', cron: '0 2 * * *', tz: 'UTC', missed: 'skip', ...tickJob };
  const entries = '[{"at": "2026-01-01T00:00:00Z", "event": "E", "thread": null, "detail": "d"}]';
  const enqueue: Use[] = [
    ['insertJob', (d, s) => jobs.insertJob(d, s, job)],
    ['insertJobs', (d, s) => jobs.insertJobs(d, s, [job])],
    ['findJob', (d, s) => jobs.findJob(d, s, { id: '1' })],
    ['watchJob', (d, s) => jobs.watchJob(d, s, { id: '1' })],
    ['watchProgress', (d, s) => watchProgress(d, s, { id: '1', watchMs: 1000 })],
    ['payloadLimit', (d, s) => payloadLimit(d, s)],
  ];
  if (kind === 'enqueuer') return enqueue;
  const anyJob = {
    states: ['failed'] as JobState[],
    task: 'square',
    queue: 'default',
    createdAfter: null,
    createdBefore: null,
    finishedAfter: null,
    finishedBefore: null,
    errorContains: 'e',
    ids: null,
    key: null,
    group: null,
  };
  if (kind === 'operator') {
    return [
      ['findJob', (d, s) => jobs.findJob(d, s, { id: '1' })],
      ['watchJob', (d, s) => jobs.watchJob(d, s, { id: '1' })],
      ['watchProgress', (d, s) => watchProgress(d, s, { id: '1', watchMs: 1000 })],
      ['requestCancel', (d, s) => jobs.requestCancel(d, s, { id: '1' })],
      ['announceCancel', (d, s) => jobs.announceCancel(d, s, { id: '1', owner: 'w' })],
      ['listSupervisors', (d, s) => sups.listSupervisors(d, s, { lostAfterMs: 1000 })],
      ['supervisorStates', (d, s) => sups.supervisorStates(d, s, { lostAfterMs: 1000, ids: ['w'] })],
      ['sendMessage', (d, s) => control.sendMessage(d, s, { recipients: ['w'], command: 'PING', argsJson: null, lostAfterMs: 1000 })],
      ['messageRecipients', (d, s) => control.messageRecipients(d, s, { messageId: '1' })],
      ['readResponses', (d, s) => control.readResponses(d, s, { messageId: '1', supervisors: ['w'] })],
      ['takeResponses', (d, s) => control.takeResponses(d, s, { messageId: '1', supervisors: ['w'], remove: true })],
      ['responseIds', (d, s) => control.responseIds(d, s, { supervisor: 'w' })],
      ['logTail', (d, s) => control.logTail(d, s, { supervisor: null, limit: 10 })],
      ['logAfter', (d, s) => control.logAfter(d, s, { afterId: '0', supervisor: null })],
      ['followLog', (d, s) => control.followLog(d, s, { follower: 'f', ttlMs: 1000 })],
      ['unfollowLog', (d, s) => control.unfollowLog(d, s, { follower: 'f' })],
      ['payloadLimit', (d, s) => payloadLimit(d, s)],
      ['upsertSchedule', (d, s) => schedules.upsertSchedule(d, s, schedule)],
      ['listSchedules', (d, s) => schedules.listSchedules(d, s)],
      ['removeSchedule', (d, s) => schedules.removeSchedule(d, s, { name: 'nightly' })],
      ['setSchedulePaused', (d, s) => schedules.setSchedulePaused(d, s, { name: 'nightly', paused: true })],
      // grapevine jobs, stats, retry, reschedule, purge, cancel; the dashboard's reads.
      ['listJobs', (d, s) => ops.listJobs(d, s, { filter: anyJob, after: null, limit: 10 })],
      ['jobStats', (d, s) => ops.jobStats(d, s)],
      ['retryJobs', (d, s) => ops.retryJobs(d, s, { filter: anyJob })],
      ['rescheduleJobs', (d, s) => ops.rescheduleJobs(d, s, { ids: ['1'], runAt: '2026-01-01T00:00:00Z' })],
      ['purgeJobs', (d, s) => ops.purgeJobs(d, s, { filter: anyJob, batchSize: 10 })],
      ['cancelJobs', (d, s) => ops.cancelJobs(d, s, { filter: anyJob })],
      ['queueActivity', (d, s) => dashboard.queueActivity(d, s)],
      ['stateEstimate', (d, s) => dashboard.stateEstimate(d, s)],
      ['stateCounts', (d, s) => dashboard.stateCounts(d, s)],
      ['jobTimeline', (d, s) => dashboard.jobTimeline(d, s, { id: '1' })],
      ['watchProgress', (d, s) => watchProgress(d, s, { id: '1', watchMs: 1000 })],
    ];
  }
  return [
    ...enqueue,
    ['claimByIds', (d, s) => jobs.claimByIds(d, s, { ...claim, ids: ['1'] })],
    ['claimNext', (d, s) => jobs.claimNext(d, s, { ...claim, limit: 1 })],
    ['writeProgress', (d, s) => writeProgress(d, s, { updates: [{ id: '1', token: '1', progress: '{"done":1}' }] })],
    ['completeJobs', (d, s) => jobs.completeJobs(d, s, { jobs: [{ id: '1', token: '1', result: '{}' }] })],
    ['deleteSucceeded', (d, s) => jobs.deleteSucceeded(d, s, { ids: ['1'], tokens: ['1'] })],
    [
      'failJobs',
      (d, s) =>
        jobs.failJobs(d, s, { jobs: [{ id: '1', token: '1', error: 'e', retryable: true }], retryBaseMs: 1000, retryMaxMs: 10_000 }),
    ],
    ['releaseUnreported', (d, s) => jobs.releaseUnreported(d, s, { owner: 'w', thread: null, reason: 'r', count: true })],
    ['lockJobs', (d, s) => d.query(jobs.lockJobsQuery(s, { ids: ['1'] }))],
    ['releaseJobs', (d, s) => jobs.releaseJobs(d, s, { owner: 'w', jobs: [{ id: '1', thread: 1, reason: 'r', count: true }] })],
    ['renewLeases', (d, s) => jobs.renewLeases(d, s, { owner: 'w', ids: ['1'], leaseMs: 1000 })],
    [
      'adoptTaskAttempts',
      (d, s) =>
        d.query(
          jobs.adoptTaskAttemptsQuery(s, {
            owner: 'w',
            thread: 1,
            leaseMs: 1000,
            attempts: new Map([['square', 2]]),
            defaultMaxAttempts: 5,
          })!,
        ),
    ],
    ['hasDue', (d, s) => jobs.hasDue(d, s, { tasks: ['square'], queues: null })],
    ['reapExpired', (d, s) => jobs.reapExpired(d, s)],
    ['pruneFinished', (d, s) => jobs.pruneFinished(d, s, { retentionMs: 1000, batchSize: 10 })],
    ['unhandledTasks', (d, s) => jobs.unhandledTasks(d, s, { liveWithinMs: 1000, sample: 10 })],
    ['upsertSchedule', (d, s) => schedules.upsertSchedule(d, s, schedule)],
    ['listSchedules', (d, s) => schedules.listSchedules(d, s)],
    ['lockDueSchedules', (d, s) => schedules.lockDueSchedules(d, s, { names: ['nightly'] })],
    [
      'insertTickJobs',
      (d, s) => schedules.insertTickJobs(d, s, [{ schedule: 'nightly', scheduled_for: '2026-01-01T00:00:00Z', ...tickJob }]),
    ],
    ['advanceLastTicks', (d, s) => schedules.advanceLastTicks(d, s, [{ name: 'nightly', last_tick: '2026-01-01T00:00:00Z' }])],
    [
      'registerSupervisor',
      (d, s) =>
        sups.registerSupervisor(d, s, {
          id: 'w',
          host: 'host',
          pid: 1,
          version: 'v',
          threads: 1,
          concurrency: 1,
          queues: null,
          tasks: ['square'],
        }),
    ],
    ['heartbeat', (d, s) => d.query(sups.heartbeatQuery(s, { id: 'w', status: 'IDLE', threads: 1, info: {} as never, tasks: ['square'] }))],
    ['deregisterSupervisor', (d, s) => sups.deregisterSupervisor(d, s, { id: 'w' })],
    ['tryLeadReaper', (d, s) => sups.tryLeadReaper(d, s)],
    ['claimChore', (d, s) => sups.claimChore(d, s, { chore: 'reap', paceMs: null })],
    ['markLostSupervisors', (d, s) => sups.markLostSupervisors(d, s, { lostAfterMs: 1000 })],
    ['pruneExitedSupervisors', (d, s) => sups.pruneExitedSupervisors(d, s)],
    ['setSupervisorStatus', (d, s) => sups.setSupervisorStatus(d, s, { id: 'w', status: 'IDLE' })],
    ['pendingMessages', (d, s) => control.pendingMessages(d, s, { supervisor: 'w', limit: 10 })],
    ['pendingMessages urgent', (d, s) => control.pendingMessages(d, s, { supervisor: 'w', limit: 10, lane: 'urgent' })],
    ['pendingMessages ordinary', (d, s) => control.pendingMessages(d, s, { supervisor: 'w', limit: 10, lane: 'ordinary' })],
    [
      'respond',
      (d, s) =>
        control.respond(d, s, {
          messageId: '1',
          supervisor: 'w',
          command: 'PING',
          ok: true,
          value: 'PONG',
          error: null,
          logEntries: entries,
        }),
    ],
    ['appendLog', (d, s) => control.appendLog(d, s, { supervisor: 'w', entries })],
    ['pruneLogPerSupervisor', (d, s) => control.pruneLogPerSupervisor(d, s, { keep: 10 })],
    ['pruneOldLog', (d, s) => control.pruneOldLog(d, s, { maxAgeMs: 1000, batchSize: 10 })],
    ['pruneMessages', (d, s) => control.pruneMessages(d, s, { maxAgeMs: 1000, batchSize: 10 })],
    ['pruneResponses', (d, s) => control.pruneResponses(d, s, { maxAgeMs: 1000, batchSize: 10 })],
  ];
}

/** The statement a typed function sends, without sending it: what the role is then made to run. */
async function statementOf([name, call]: Use): Promise<TypedQuery<unknown>> {
  let sent: TypedQuery<unknown> | undefined;
  const recorder: Queryable = {
    query: ((q: TypedQuery<unknown>) => {
      sent ??= q;
      return Promise.resolve({ rows: [], rowCount: 0 });
    }) as unknown as Queryable['query'],
  };
  // Reading the answer may fail on the empty result; the statement was recorded before that.
  await call(recorder, db.schema).catch(() => {});
  if (!sent) throw new Error(`${name} sent no statement`);
  return sent;
}

/** Runs each statement as the role, each in a transaction it rolls back; returns those refused, with why. */
async function refusedAs(role: OwnRole, uses: Use[]): Promise<string[]> {
  const conn = new pg.Client({ connectionString: role.url });
  await conn.connect();
  const refused: string[] = [];
  try {
    for (const use of uses) {
      const st = await statementOf(use);
      await conn.query('BEGIN');
      await conn.query(st.text, st.values).catch((err: Error) => refused.push(`${use[0]}: ${err.message}`));
      await conn.query('ROLLBACK');
    }
  } finally {
    await conn.end();
  }
  return refused;
}

describe('each kind', () => {
  it('may run every statement its side of grapevine runs', async () => {
    for (const [role, kind] of [
      [enqueuer, 'enqueuer'],
      [worker, 'worker'],
      [operator, 'operator'],
    ] as const) {
      expect([kind, await refusedAs(role, statementsOf(kind))]).toEqual([kind, []]);
    }
    // And the enqueuer none of the others', but the three that read or write
    // no table: an advisory lock, a NOTIFY (any role may send one with
    // pg_notify, which is why a notification is only ever a hint), and the
    // planner's row estimate, which pg_class shows every role.
    const harmless = ['tryLeadReaper', 'announceCancel', 'stateEstimate'];
    const others = [...statementsOf('worker'), ...statementsOf('operator')].filter(
      ([name]) => !harmless.includes(name) && !statementsOf('enqueuer').some(([e]) => e === name),
    );
    expect((await refusedAs(enqueuer, others)).length).toBe(others.length);
    // The worker reads the jobs it runs, and may not act on them as an operator does.
    const actions = statementsOf('operator').filter(([name]) => /^(retry|reschedule|purge|cancel)Jobs$/.test(name));
    expect((await refusedAs(worker, actions)).length).toBe(4);
  });
});

describe('an enqueuer', () => {
  it('adds jobs one by one and in bulk, from the client with no options and from SQL, and reads them back', async () => {
    const client = clientAs(enqueuer);
    const one = await client.addJob('square', { n: 4 }, { priority: 3 });
    const many = await client.addJobs([
      { task: 'square', payload: { n: 9 } },
      { task: 'square', payload: { n: 16 }, queue: 'other' },
    ]);
    expect(many).toHaveLength(2);
    expect(await client.getJob(one)).toMatchObject({ id: one, task: 'square', state: 'pending', priority: 3, payload: { n: 4 } });
    expect((await client.getJob(many[1]))!.queue).toBe('other');

    const conn = new pg.Client({ connectionString: enqueuer.url });
    await conn.connect();
    try {
      const { rows: single } = await conn.query(`SELECT ${db.s}.add_job('square', '{"n": 25}') AS id`);
      const { rows: bulk } = await conn.query(`SELECT id FROM ${db.s}.add_jobs($1) AS id`, [
        JSON.stringify([{ task: 'square', payload: { n: 36 } }, { task: 'square' }]),
      ]);
      expect(bulk).toHaveLength(2);
      const { rows: read } = await conn.query(`SELECT state, payload FROM ${db.s}.get_job($1)`, [single[0].id]);
      expect(read).toEqual([{ state: 'pending', payload: { n: 25 } }]);
      expect(await stateOf(bulk[1].id)).toBe('pending');
    } finally {
      await conn.end();
    }
  });

  it('cannot read or write the jobs table, forge a finished or leased job, cancel, or change the schema', async () => {
    const { rows } = await db.pool.query(`SELECT ${db.s}.add_job('square', '{"n": 49}') AS id`);
    const id = String(rows[0].id);
    const attempts: Array<[string, unknown[]]> = [
      [`SELECT * FROM ${db.s}.jobs`, []],
      [`INSERT INTO ${db.s}.jobs (task, state, result, finished_at) VALUES ('square', 'succeeded', '{"root": 42}', now())`, []],
      [
        `INSERT INTO ${db.s}.jobs (task, state, attempts, locked_by, claim_token, lease_until, started_at)
         VALUES ('square', 'running', 1, 'nobody', 1, 'infinity', now())`,
        [],
      ],
      [`UPDATE ${db.s}.jobs SET state = 'succeeded' WHERE id = $1`, [id]],
      [`DELETE FROM ${db.s}.jobs WHERE id = $1`, [id]],
      [`SELECT * FROM ${db.s}.cancel_job($1)`, [id]],
      [`SELECT * FROM ${db.s}.supervisors`, []],
      [`INSERT INTO ${db.s}.messages (id, worker, command) VALUES (1, 'any', 'STOP')`, []],
      [`UPDATE ${db.s}.settings SET max_payload_bytes = 1`, []],
      [`CREATE TABLE ${db.s}.mine (x int)`, []],
    ];
    for (const [text, values] of attempts) expect([text, await sqlstateAs(enqueuer, text, values)]).toEqual([text, DENIED]);

    const client = clientAs(enqueuer);
    expect((await client.cancelJob(id).catch((e: unknown) => e)) as { code?: string }).toMatchObject({ code: DENIED });
    expect((await client.runDueNow().catch((e: unknown) => e)) as { code?: string }).toMatchObject({ code: DENIED });
    expect(await stateOf(id)).toBe('pending');
    const { rows: forged } = await db.pool.query(`SELECT count(*)::int AS n FROM ${db.s}.jobs WHERE state <> 'pending'`);
    expect(forged[0].n).toBe(0);
  });

  it("may mark a job's progress watched for a few minutes at most, not for weeks", async () => {
    const { rows } = await db.pool.query(`SELECT ${db.s}.add_job('square', '{"n": 50}', run_at => now() + interval '1 hour') AS id`);
    const id = String(rows[0].id);
    // 2^31 - 1 ms: 24 days of a NOTIFY for every progress write of the job, whoever watches.
    expect(await sqlstateAs(enqueuer, `SELECT * FROM ${db.s}.watch_progress($1, 2147483647)`, [id])).toBeUndefined();
    const { rows: marked } = await db.pool.query(
      `SELECT progress_watched_until <= now() + interval '5 minutes' AS bounded FROM ${db.s}.jobs WHERE id = $1`,
      [id],
    );
    expect(marked[0].bounded).toBe(true);
  });
});

describe('a worker', () => {
  it('runs a supervisor that processes jobs (handlers enqueue too) with no DDL right, and the enqueuer reads the results', async () => {
    supervisor = await startSupervisor({
      connectionString: worker.url,
      schema: db.schema,
      tasks: FIXTURE_TASKS,
      threads: 1,
      logger: testLogger(),
    });
    const client = clientAs(enqueuer);
    const id = await client.addJob('square', { n: 64 });
    const done = await client.waitForJob(id, { timeoutMs: 30_000 });
    expect(done).toMatchObject({ state: 'succeeded', result: { n: 64, root: 8 } });

    // A handler's addJob() runs in the worker's thread, as the worker role.
    const parent = await client.addJob('report_helpers', { followUp: { task: 'square', payload: { n: 81 } } });
    const reported = await client.waitForJob(parent, { timeoutMs: 30_000 });
    expect(reported.state).toBe('succeeded');
    const child = (reported.result as { followUp: string }).followUp;
    expect((await client.waitForJob(child, { timeoutMs: 30_000 })).result).toMatchObject({ root: 9 });

    // A flow, enqueued by the enqueuer: the worker's outcome writes wake the fan-in, whose handler reads its dependencies.
    const flow = await client.addFlow([
      { name: 'a', task: 'square', payload: { n: 4 } },
      { name: 'b', task: 'square', payload: { n: 9 } },
      { name: 'join', task: 'collect', after: ['a', 'b'] },
    ]);
    const joined = await client.waitForJob(flow.join, { timeoutMs: 30_000 });
    expect(joined.state).toBe('succeeded');
    expect((joined.result as { deps: Array<{ result: { root: number } }> }).deps.map((d) => d.result.root)).toEqual([2, 3]);

    const { rows } = await db.pool.query(
      `SELECT DISTINCT usename FROM pg_stat_activity WHERE application_name LIKE 'grapevine-supervisor%' AND usename = $1`,
      [worker.name],
    );
    expect(rows).toEqual([{ usename: worker.name }]);
    expect(await sqlstateAs(worker, `CREATE TABLE ${db.s}.mine (x int)`)).toBe(DENIED);
    expect(await sqlstateAs(worker, `CREATE OR REPLACE FUNCTION ${db.s}.mine() RETURNS int LANGUAGE sql AS 'SELECT 1'`)).toBe(DENIED);
    expect(await sqlstateAs(worker, `ALTER TABLE ${db.s}.jobs ADD COLUMN mine int`)).toBe(DENIED);
  });

  it("stores its handlers' progress, which an enqueuer follows with waitForJob's onProgress", async () => {
    const client = clientAs(enqueuer);
    const id = await client.addJob('progress', { burst: 3, last: 'done' });
    const seen: unknown[] = [];
    const job = await client.waitForJob(id, { timeoutMs: 30_000, onProgress: (p) => seen.push(p) });
    expect(job).toMatchObject({ state: 'succeeded', progress: 'done' });
    expect(seen.at(-1)).toBe('done');
  });
});

describe('an operator', () => {
  it('pings the supervisors, reads the registry and the log, and cancels pending and running jobs', async () => {
    const control = createControl({ connectionString: operator.url, schema: db.schema });
    closers.push(() => control.close());
    const responses = await control.sendAndWait('PING', undefined, { timeoutMs: 30_000 });
    expect(Object.values(responses)).toEqual([expect.objectContaining({ supervisor: supervisor!.id, ok: true, value: 'PONG' })]);
    expect((await control.supervisors()).map((s) => s.id)).toContain(supervisor!.id);
    expect((await control.logTail({ n: 5 })).length).toBeGreaterThan(0);

    const enqueue = clientAs(enqueuer);
    const later = await enqueue.addJob('square', { n: 100 }, { runAt: new Date(Date.now() + 3_600_000) });
    const running = await enqueue.addJob('hang', { cooperative: true });
    await eventually(async () => (await stateOf(running)) === 'running', 'the hang job to start');

    const client = clientAs(operator);
    expect(await client.cancelJob(later)).toEqual({ state: 'cancelled' });
    expect(await client.cancelJob(running)).toEqual({ state: 'cancelling' });
    expect((await client.getJob(running))!.cancelRequestedAt).toBeInstanceOf(Date);
    expect((await enqueue.waitForJob(running, { timeoutMs: 30_000 })).state).toBe('cancelled');
    expect(await stateOf(later)).toBe('cancelled');

    expect(await sqlstateAs(operator, `UPDATE ${db.s}.jobs SET state = 'succeeded'`)).toBe(DENIED);
    expect(await sqlstateAs(operator, `SELECT ${db.s}.add_job('square')`)).toBe(DENIED);
    expect(await sqlstateAs(operator, `CREATE TABLE ${db.s}.mine (x int)`)).toBe(DENIED);
  });
});

describe('control messages', () => {
  it('only an operator sends them; the worker marks its own processed but cannot rewrite one, or make one run again', async () => {
    const id = supervisor!.id;
    const CHANGED = '23514';
    const insert = `INSERT INTO ${db.s}.messages (id, worker, command, args) VALUES (987654, $1, 'EVAL', '"process.exit(1)"')`;
    for (const role of [enqueuer, worker, nobody]) expect([role.name, await sqlstateAs(role, insert, [id])]).toEqual([role.name, DENIED]);
    const send: Use = [
      'sendMessage',
      (d, s) => control.sendMessage(d, s, { recipients: [id], command: 'STOP', argsJson: null, lostAfterMs: 60_000 }),
    ];
    expect(await refusedAs(worker, [send])).toEqual([expect.stringContaining('permission denied')]);

    // The operator's PING is answered by the supervisor running as the worker, which marks it processed.
    const ops = createControl({ connectionString: operator.url, schema: db.schema });
    closers.push(() => ops.close());
    const ping = await ops.send('PING', undefined, { supervisors: [id] });
    expect((await ops.getResponse(ping, { timeoutMs: 30_000 }))[id].value).toBe('PONG');
    // EVAL still needs the supervisor's allowEval, whoever sends it.
    expect((await ops.sendAndWait('EVAL', '1 + 1', { supervisors: [id], timeoutMs: 30_000 }))[id]).toMatchObject({
      ok: false,
      error: { code: 'GRAPEVINE_COMMAND_REFUSED' },
    });

    // Rewriting a message into an EVAL or a STOP, or sending it elsewhere: no right on those columns.
    const rewrites = [
      `UPDATE ${db.s}.messages SET command = 'EVAL', args = '"process.exit(1)"' WHERE id = $1`,
      `UPDATE ${db.s}.messages SET worker = 'another' WHERE id = $1`,
    ];
    for (const text of rewrites) {
      expect([text, await sqlstateAs(worker, text, [ping])]).toEqual([text, DENIED]);
      expect([text, await sqlstateAs(operator, text, [ping])]).toEqual([text, DENIED]);
    }
    // Making a processed message run again is refused by the table itself, to every role.
    const asOwner = (text: string) =>
      db.pool.query(text, [ping]).then(
        () => undefined,
        (e: { code?: string }) => e.code,
      );
    const replay = `UPDATE ${db.s}.messages SET processed_at = NULL WHERE id = $1`;
    expect(await sqlstateAs(worker, replay, [ping])).toBe(CHANGED);
    expect(await asOwner(replay)).toBe(CHANGED);
    // So is a rewrite by a role that has UPDATE on the whole table (the schema's owner, or a
    // worker granted by an earlier release).
    for (const text of rewrites) expect(await asOwner(text)).toBe(CHANGED);
    await db.pool.query(`GRANT UPDATE ON ${db.s}.messages TO "${worker.name}"`);
    try {
      expect(await sqlstateAs(worker, rewrites[0], [ping])).toBe(CHANGED);
    } finally {
      await db.pool.query(`REVOKE UPDATE ON ${db.s}.messages FROM "${worker.name}"`);
      await grantRole({ connectionString: db.url, schema: db.schema, role: worker.name, as: 'worker' });
    }
    const { rows } = await db.pool.query(
      `SELECT command, args, worker, processed_at IS NOT NULL AS processed FROM ${db.s}.messages WHERE id = $1`,
      [ping],
    );
    expect(rows).toEqual([{ command: 'PING', args: null, worker: id, processed: true }]);
  });
});

describe('a role that may not migrate', () => {
  it('starts against a current schema, and against one that needs migrating fails with one line naming grapevine migrate', async () => {
    // A release whose function file changed: the schema is behind until its owner migrates it.
    await db.pool.query(`UPDATE ${db.s}.schema_functions SET checksum = 'an older release' WHERE name = 'has_due'`);
    const expectTooOld = (err: unknown, role: OwnRole) => {
      expect((err as GrapevineError).code).toBe('GRAPEVINE_SCHEMA_TOO_OLD');
      const message = (err as Error).message;
      expect(message).toContain(
        `schema "${db.schema}" has older functions than this grapevine, and role "${role.name}" may not migrate it`,
      );
      expect(message).toContain(`run \`grapevine migrate --schema ${db.schema}\` as a role that may change the schema`);
      expect(message).not.toContain('\n');
    };
    const started = await startSupervisor({
      connectionString: worker.url,
      schema: db.schema,
      tasks: FIXTURE_TASKS,
      threads: 1,
      logger: testLogger(),
    }).then(
      async (s) => {
        await s.stop({ graceMs: 0 });
        return null;
      },
      (e: unknown) => e,
    );
    expectTooOld(started, worker);
    const late = createClient({ connectionString: enqueuer.url, schema: db.schema });
    try {
      expectTooOld(await late.addJob('square', { n: 1 }).catch((e: unknown) => e), enqueuer);
      // The owner migrates; the same client then gets on with it.
      expect(await db.client.migrate()).toEqual(expect.objectContaining({ applied: [] }));
      expect(await late.addJob('square', { n: 1 })).toMatch(/^\d+$/);
    } finally {
      await late.close();
    }
    // An older version, as its migrations table tells.
    const latest = migrations().at(-1)!;
    await db.pool.query(`DELETE FROM ${db.s}.migrations WHERE version = $1`, [latest.version]);
    const older = createClient({ connectionString: worker.url, schema: db.schema });
    try {
      const err = await older.getJob(1).catch((e: unknown) => e);
      expect((err as GrapevineError).code).toBe('GRAPEVINE_SCHEMA_TOO_OLD');
      expect((err as Error).message).toContain(
        `schema "${db.schema}" is at version ${migrations().at(-2)!.version} and this grapevine needs version ${latest.version}`,
      );
      expect((err as Error).message).toContain(`grapevine migrate --schema ${db.schema}`);
    } finally {
      await older.close();
      await db.pool.query(`INSERT INTO ${db.s}.migrations (version, name) VALUES ($1, $2)`, [latest.version, latest.name]);
    }

    // A role that was granted nothing cannot even tell, and is told what to ask for.
    const stranger = createClient({ connectionString: nobody.url, schema: db.schema });
    try {
      const err = await stranger.addJob('square', { n: 1 }).catch((e: unknown) => e);
      expect((err as GrapevineError).code).toBe('GRAPEVINE_PERMISSION_DENIED');
      expect((err as Error).message).toContain(`role "${nobody.name}" may not read grapevine's tables in schema "${db.schema}"`);
      expect((err as Error).message).toContain(`grapevine grant ${nobody.name} --as worker|enqueuer|operator --schema ${db.schema}`);
    } finally {
      await stranger.close();
    }
  });
});
