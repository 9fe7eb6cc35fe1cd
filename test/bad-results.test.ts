import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GrapevineError, startSupervisor, type Supervisor } from '../supervisor/public.ts';
import { createLogger } from '../src/log.ts';
import { eventually, FIXTURE_TASKS, useMigratedSchema } from './helpers/db.ts';
import { CLI, run } from './helpers/process.ts';

const db = useMigratedSchema('bad_results');
const { client } = db;

const BROKEN = path.resolve(import.meta.dirname, 'fixtures/broken-tasks');
const logger = () => createLogger({ level: process.env.GRAPEVINE_TEST_LOG ?? 'silent' });

describe('handlers that return what JSON cannot hold or throw what is not an Error', () => {
  let supervisor: Supervisor;
  beforeAll(async () => {
    supervisor = await startSupervisor({
      connectionString: db.url,
      schema: db.schema,
      tasks: FIXTURE_TASKS,
      threads: 2,
      concurrency: 4,
      heartbeatIntervalMs: 200,
      sweepIntervalMs: 200,
      shutdownGraceMs: 0,
      logger: logger(),
    });
  });
  afterAll(() => supervisor?.stop({ graceMs: 0 }));

  const cases: Array<{ kind: string; lastError: RegExp }> = [
    { kind: 'return-function', lastError: /^result is not JSON-serializable: handler returned a function$/ },
    { kind: 'return-symbol', lastError: /^result is not JSON-serializable: handler returned a symbol$/ },
    { kind: 'return-bigint', lastError: /^result is not JSON-serializable: .*BigInt/ },
    // JSON would store these as {}: refused rather than lost.
    { kind: 'return-map', lastError: /^result is not JSON-serializable: it holds a Map, which JSON stores as \{\}: / },
    { kind: 'return-nested-set', lastError: /^result is not JSON-serializable: it holds a Set \(at "ids"\), which JSON stores as \{\}: / },
    { kind: 'return-circular', lastError: /^result is not JSON-serializable: .*circular/ },
    // Resolving a handler's promise with it reads its `then`, which throws: a failure like any other.
    { kind: 'return-hostile-proxy', lastError: /^Error: refusing to be read\n/ },
    { kind: 'return-tojson-throwing-null', lastError: /^result is not JSON-serializable: null was thrown$/ },
    { kind: 'throw-null', lastError: /^NonErrorThrown: null was thrown$/ },
    { kind: 'throw-undefined', lastError: /^NonErrorThrown: undefined was thrown$/ },
    { kind: 'throw-string', lastError: /^NonErrorThrown: a plain string was thrown$/ },
    { kind: 'throw-unprintable-object', lastError: /^NonErrorThrown: unprintable value thrown$/ },
    { kind: 'throw-unprintable-error', lastError: /^Error: \(the error message could not be read\)$/ },
    { kind: 'throw-coded-error', lastError: /^QuotaExceededError \[E_QUOTA\]: monthly quota of 100 calls used up\n\s+at / },
    { kind: 'throw-hostile-proxy', lastError: /^NonErrorThrown: unprintable value thrown$/ },
  ];

  it('gives every such job a readable failed record, all at once on the same threads, and no thread dies', async () => {
    const threadsBefore = supervisor
      .status()
      .threads.map((t) => t.threadId)
      .sort();
    // Together, so several of them share a batch and a thread.
    const ids = await client.addJobs(cases.map(({ kind }) => ({ task: 'odd-outcome', payload: { kind }, maxAttempts: 1 })));
    const jobs = await Promise.all(ids.map((id) => client.waitForJob(id, { timeoutMs: 30_000 })));
    for (const [i, { kind, lastError }] of cases.entries()) {
      expect(jobs[i], kind).toMatchObject({ state: 'failed', attempts: 1, result: null });
      expect(jobs[i].lastError, kind).toMatch(lastError);
    }

    const ok = await client.addJob('square', { n: 16 });
    expect(await client.waitForJob(ok, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', result: { root: 4 } });
    const status = supervisor.status();
    expect(status.restarts).toBe(0);
    expect(status.counters.threadCrashes).toBe(0);
    expect(status.threads.map((t) => t.threadId).sort()).toEqual(threadsBefore);
  });

  it('retries a non-Error throw like any failure until its attempts run out', async () => {
    const id = await client.addJob('odd-outcome', { kind: 'throw-null' }, { maxAttempts: 2 });
    await eventually(
      async () => (await client.getJob(id))?.attempts === 1 && (await client.getJob(id))?.state === 'pending',
      'the first failure',
    );
    await client.runDueNow();
    const job = await client.waitForJob(id, { timeoutMs: 30_000 });
    expect(job).toMatchObject({ state: 'failed', attempts: 2, lastError: 'NonErrorThrown: null was thrown' });
    expect(supervisor.status().restarts).toBe(0);
  });
});

describe('a task module that cannot be imported', () => {
  const broken = [
    {
      what: 'has a syntax error',
      dir: path.join(BROKEN, 'syntax-error'),
      file: 'broken-syntax.mjs',
      reason: /SyntaxError|Unexpected token|missing \)/,
    },
    {
      what: 'throws while it is imported',
      dir: path.join(BROKEN, 'top-level-throw'),
      file: 'throws-on-import.mjs',
      reason: /TASK_SECRET_KEY is not set; this module cannot start/,
    },
  ];

  for (const { what, dir, file, reason } of broken) {
    it(`makes startSupervisor reject with GRAPEVINE_TASKS_INVALID naming the module's path and the reason when it ${what}`, async () => {
      const err = await startSupervisor({
        connectionString: db.url,
        schema: db.schema,
        tasks: dir,
        threads: 2,
        id: `broken-${file}`,
        logger: logger(),
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(GrapevineError);
      expect((err as GrapevineError).code).toBe('GRAPEVINE_TASKS_INVALID');
      expect((err as Error).message).toContain(path.join(dir, file));
      expect((err as Error).message).toMatch(reason);
      // It never got as far as registering.
      const { rows } = await db.pool.query(`SELECT id FROM "${db.schema}".supervisors WHERE id = $1`, [`broken-${file}`]);
      expect(rows).toEqual([]);
    });

    it(`makes \`grapevine run\` exit non-zero with one line naming the module's path when it ${what}`, async () => {
      const result = await run([CLI, 'run', '--tasks', dir, '--schema', db.schema, '--threads', '1'], {
        DATABASE_URL: db.url,
        GRAPEVINE_LOG_LEVEL: 'silent',
      });
      expect(result.code).not.toBe(0);
      expect(result.code).not.toBeNull();
      const lines = result.stderr.trim().split('\n');
      expect(lines, result.stderr).toHaveLength(1);
      expect(lines[0]).toContain(path.join(dir, file));
      expect(lines[0]).toMatch(reason);
    });
  }
});
