import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, GrapevineError, startSupervisor } from '../supervisor/public.ts';
import { eventually, FIXTURE_TASKS, useTestSchema } from './helpers/db.ts';
import { capturingLogger } from './helpers/logs.ts';
import { CLI, ROOT, run, start } from './helpers/process.ts';
import { useOwnRole } from './helpers/role.ts';

const db = useTestSchema('secrets');
// A login role with a password, so the supervisors' connection string has
// one to leak (the external test server trusts local logins, but the
// password is in the string all the same).
const role = useOwnRole(db, 'secrets');
const client = createClient({ connectionString: db.url, schema: db.schema });
const s = `"${db.schema}"`;
beforeAll(() => client.migrate());
afterAll(() => client.close());

/** Every password in play: the role's, and the test database's own if its URL has one (the embedded server's does). */
function secrets(): string[] {
  return [role.url, db.url].map((u) => decodeURIComponent(new URL(u).password)).filter((p) => p.length > 0);
}

const SUPERVISOR_OPTIONS = {
  schema: db.schema,
  tasks: FIXTURE_TASKS,
  threads: 1,
  concurrency: 4,
  leaseMs: 2_000,
  heartbeatIntervalMs: 200,
  reaperIntervalMs: 200,
  sweepIntervalMs: 200,
  shutdownGraceMs: 0,
};

/** Backends of this file's supervisors (they connect as the file's role). */
async function terminate(applicationName: string): Promise<number> {
  const { rows } = await db.pool.query(
    `SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity WHERE usename = $1 AND application_name LIKE $2`,
    [role.name, applicationName],
  );
  return rows.filter((r) => r.done).length;
}

async function listenerPids(): Promise<number[]> {
  const { rows } = await db.pool.query(`SELECT pid FROM pg_stat_activity WHERE usename = $1 AND application_name = 'grapevine-listener'`, [
    role.name,
  ]);
  return rows.map((r) => r.pid);
}

/**
 * Makes a supervisor fail in the ways that produce error text: a handler
 * whose error echoes the connection string, a killed LISTEN connection, and
 * claims that fail (the role's new sessions are read-only, and the threads'
 * connections are cut so they must open new ones).
 */
async function provokeErrors(
  counters: () => Promise<{ claimErrors: number; restarts: number }>,
): Promise<{ leaked: string; crashed: string }> {
  const leaked = await client.addJob('leak-connection-string', {}, { maxAttempts: 1 });
  expect(await client.waitForJob(leaked, { timeoutMs: 30_000 })).toMatchObject({ state: 'failed' });
  // The same error uncaught: it ends the thread, and the supervisor records and logs why.
  const crashed = await client.addJob('leak-connection-string', { crash: true }, { maxAttempts: 1 });
  expect(await client.waitForJob(crashed, { timeoutMs: 30_000 })).toMatchObject({ state: 'failed' });
  // And once more after its job has finished: the thread dies outside any job.
  const { restarts } = await eventually(async () => {
    const now = await counters();
    return now.restarts >= 1 ? now : null;
  }, 'the crashed thread to be replaced');
  const later = await client.addJob('leak-connection-string', { crashOnceRecordedIn: `"${db.schema}".jobs` }, { maxAttempts: 1 });
  expect(await client.waitForJob(later, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded' });
  await eventually(async () => (await counters()).restarts > restarts, 'the thread that crashed after its job to be replaced');

  const [listener] = await eventually(listenerPids, 'the LISTEN connection');
  expect(await terminate('grapevine-listener')).toBe(1);
  await eventually(async () => (await listenerPids()).some((pid) => pid !== listener), 'the LISTEN connection to come back');

  await db.pool.query(`ALTER ROLE "${role.name}" SET default_transaction_read_only = on`);
  let after: string;
  try {
    await terminate('grapevine-thread-%');
    after = await client.addJob('square', { n: 25 });
    await eventually(async () => (await counters()).claimErrors > 0, 'a claim to fail on a read-only connection');
  } finally {
    await db.pool.query(`ALTER ROLE "${role.name}" RESET default_transaction_read_only`);
  }
  await terminate('grapevine-thread-%');
  expect(await client.waitForJob(after, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', result: { root: 5 } });
  return { leaked, crashed };
}

/** What the database keeps that a person might read: stored errors, supervisor info, the worker log. */
async function storedText(): Promise<string> {
  const jobs = await db.pool.query(`SELECT coalesce(string_agg(last_error, E'\\n'), '') AS text FROM ${s}.jobs`);
  const supervisors = await db.pool.query(
    `SELECT coalesce(string_agg(info::text || ' ' || row_to_json(sv)::text, E'\\n'), '') AS text FROM ${s}.supervisors sv`,
  );
  const workerLog = await db.pool
    .query(`SELECT coalesce(string_agg(detail, E'\\n'), '') AS text FROM ${s}.worker_log`)
    .catch(() => ({ rows: [{ text: '' }] }));
  return [jobs.rows[0].text, supervisors.rows[0].text, workerLog.rows[0].text].join('\n');
}

function expectNoSecret(text: string, where: string): void {
  for (const secret of secrets()) expect(text.includes(secret), `${where} contains a password`).toBe(false);
}

async function expectRedactedLastErrors({ leaked, crashed }: { leaked: string; crashed: string }): Promise<void> {
  // The handler's message survives, minus the password: the target is shown as user@host:port/db.
  const url = new URL(role.url);
  const redacted = `upstream refused ${role.name}@${url.hostname}:${url.port || '5432'}/${url.pathname.slice(1)} (login with password *** failed)`;
  expect((await client.getJob(leaked))!.lastError).toMatch(new RegExp(`^Error: ${escapeRegExp(redacted)}\n`));
  expect((await client.getJob(crashed))!.lastError).toMatch(new RegExp(`^thread crashed: ${escapeRegExp(redacted)}(\n\\s+at |$)`));
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

describe('secrets', () => {
  it('never puts the password into the logs at debug level, the stored errors or the supervisor rows of an in-process supervisor', async () => {
    const captured = capturingLogger('debug');
    const supervisor = await startSupervisor({ ...SUPERVISOR_OPTIONS, connectionString: role.url, logger: captured.logger });
    let leaks: { leaked: string; crashed: string };
    try {
      leaks = await provokeErrors(async () => ({
        claimErrors: supervisor.status().counters.claimErrors,
        restarts: supervisor.status().restarts,
      }));
    } finally {
      await supervisor.stop({ graceMs: 0 });
    }
    const logs = captured.text();
    // The errors really were logged, at the levels one would grep.
    expect(logs).toMatch(/LISTEN connection lost; reconnecting/);
    expect(logs).toMatch(/claim failed; will retry from the table/);
    expect(logs).toMatch(/thread failed outside a job|a thread crashed/);
    expectNoSecret(logs, 'the supervisor log');
    expectNoSecret(await storedText(), 'the database');
    await expectRedactedLastErrors(leaks);
  });

  it('never prints the password from a supervisor process, threads included, at debug level', async () => {
    const child = start([path.join(ROOT, 'supervisor/testing-child.ts')], {
      GRAPEVINE_TEST_CHILD: JSON.stringify({ ...SUPERVISOR_OPTIONS, connectionString: role.url, logLevel: 'debug' }),
    });
    const id = (await child.waitFor(/ready \S+/)).slice('ready '.length);
    let leaks: { leaked: string; crashed: string };
    try {
      leaks = await provokeErrors(async () => {
        const { rows } = await db.pool.query(`SELECT info FROM ${s}.supervisors WHERE id = $1`, [id]);
        return { claimErrors: rows[0]?.info?.counters?.claimErrors ?? 0, restarts: rows[0]?.info?.restarts ?? 0 };
      });
    } finally {
      child.child.kill('SIGTERM');
    }
    const exited = await child.exited;
    expect(exited.code).toBe(0);
    const output = exited.stdout + exited.stderr;
    // Threads log too (their lines carry a threadId), and the errors were there to be logged.
    expect(output).toMatch(/"threadId":\d+/);
    expect(output).toMatch(/LISTEN connection lost; reconnecting/);
    expect(output).toMatch(/claim failed; will retry from the table/);
    expect(output).toMatch(/thread failed outside a job|a thread crashed/);
    expectNoSecret(output, 'the supervisor process output');
    expectNoSecret(await storedText(), 'the database');
    await expectRedactedLastErrors(leaks);
  });

  it('reports a task module whose import error echoes the connection string without the password, from startSupervisor and `grapevine run`', async () => {
    const tasks = path.resolve(import.meta.dirname, 'fixtures/broken-tasks/leaks-on-import');
    const err = await startSupervisor({
      ...SUPERVISOR_OPTIONS,
      tasks,
      connectionString: role.url,
      logger: capturingLogger('debug').logger,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GrapevineError);
    expect((err as GrapevineError).code).toBe('GRAPEVINE_TASKS_INVALID');
    expect((err as Error).message).toMatch(/connect-on-import\.mjs failed to load: cannot open a pool for t_secrets_\w+@/);
    expectNoSecret((err as Error).message, 'the error');

    const cli = await run([CLI, 'run', '--tasks', tasks, '--schema', db.schema, '--threads', '1'], {
      DATABASE_URL: role.url,
      GRAPEVINE_LOG_LEVEL: 'debug',
    });
    expect(cli.code).not.toBe(0);
    expect(cli.stderr).toMatch(/cannot open a pool for t_secrets_\w+@/);
    expectNoSecret(cli.stdout + cli.stderr, 'the CLI output');
  });
});
