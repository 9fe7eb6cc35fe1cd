import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSupervisor, type Supervisor, type SupervisorOptions } from '../supervisor/public.ts';
import { createLogger } from '../src/log.ts';
import { FIXTURE_TASKS, useMigratedSchema } from './helpers/db.ts';

const db = useMigratedSchema('unstorable');
const { client } = db;

const logger = () => createLogger({ level: process.env.GRAPEVINE_TEST_LOG ?? 'silent' });

function start(options: Partial<SupervisorOptions> = {}): Promise<Supervisor> {
  return startSupervisor({
    connectionString: db.url,
    schema: db.schema,
    tasks: FIXTURE_TASKS,
    // One thread, room for every job, and no sweep: the jobs enqueued
    // together are announced together and claimed in one batch.
    threads: 1,
    concurrency: 16,
    sweepIntervalMs: 60_000,
    heartbeatIntervalMs: 200,
    shutdownGraceMs: 0,
    logger: logger(),
    ...options,
  });
}

/**
 * A supervisor whose thread has run a job: one still booting takes no ids
 * from a notification, and they would then be pulled in more than one claim.
 */
async function startWarm(options: Partial<SupervisorOptions> = {}): Promise<Supervisor> {
  const supervisor = await start(options);
  const warm = await client.addJob('unstorable', { kind: 'ok', n: 0 });
  await client.waitForJob(warm, { timeoutMs: 30_000 });
  return supervisor;
}

/**
 * Runs one job whose outcome cannot be stored as it is between ordinary
 * ones, all claimed in one batch (due at the same instant, a moment after
 * they are enqueued, so no claim can take some of them before the others
 * whatever the machine's load), and checks that only it fails, that the
 * others keep their results, and that a job enqueued afterwards runs.
 */
async function runAmongOrdinary(
  kind: Record<string, unknown>,
  { maxAttempts = 3, timeoutMs = 30_000 } = {},
): Promise<{ lastError: string; id: string }> {
  const runAt = new Date(Date.now() + 300);
  const ok = (n: number) => ({ task: 'unstorable', payload: { kind: 'ok', n }, maxAttempts: 3, runAt });
  const ids = await client.addJobs([ok(1), { task: 'unstorable', payload: kind, maxAttempts, runAt }, ok(2), ok(3)]);
  const jobs = await Promise.all(ids.map((id) => client.waitForJob(id, { timeoutMs })));

  const { rows } = await db.pool.query(`SELECT count(DISTINCT claim_token)::int AS claims FROM ${db.s}.jobs WHERE id = ANY($1::bigint[])`, [
    ids,
  ]);
  expect(rows[0].claims, 'the jobs shared one claim').toBe(1);
  expect(jobs[1]).toMatchObject({ state: 'failed', attempts: 1, maxAttempts, result: null });
  for (const [i, n] of [
    [0, 1],
    [2, 2],
    [3, 3],
  ]) {
    expect(jobs[i]).toMatchObject({ state: 'succeeded', attempts: 1, result: { ok: n } });
  }

  const later = await client.addJob('unstorable', { kind: 'ok', n: 4 });
  expect(await client.waitForJob(later, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', result: { ok: 4 } });
  return { lastError: jobs[1].lastError ?? '', id: ids[1] };
}

describe('a job whose outcome PostgreSQL cannot store', () => {
  let supervisor: Supervisor;
  const parked: string[] = [];
  beforeAll(async () => {
    supervisor = await startWarm();
  });
  afterAll(() => supervisor?.stop({ graceMs: 0 }));

  it('fails alone, naming the NUL character its result holds', async () => {
    const { lastError, id } = await runAmongOrdinary({ kind: 'result-nul' });
    parked.push(id);
    expect(lastError).toMatch(
      /^GrapevineError \[GRAPEVINE_RESULT_UNSTORABLE\]: the result holds a NUL character \(\\u0000\), which PostgreSQL cannot store/,
    );
  });

  it('fails alone, naming the lone surrogate its result holds', async () => {
    const { lastError, id } = await runAmongOrdinary({ kind: 'result-lone-surrogate' });
    parked.push(id);
    expect(lastError).toMatch(
      /^GrapevineError \[GRAPEVINE_RESULT_UNSTORABLE\]: the result holds a lone UTF-16 surrogate \(\\ud83d without its other half/,
    );
  });

  it('fails alone with its error, a NUL in the message replaced by U+FFFD', async () => {
    // A failure like any other, so retried as any other: one attempt here.
    const { lastError } = await runAmongOrdinary({ kind: 'error-nul' }, { maxAttempts: 1 });
    expect(lastError).toMatch(/^Error: bad byte \ufffd in input\n\s+at /);
  });

  it('fails alone with its error, a lone surrogate in the message replaced by U+FFFD', async () => {
    const { lastError } = await runAmongOrdinary({ kind: 'error-lone-surrogate' }, { maxAttempts: 1 });
    expect(lastError).toMatch(/^Error: cut inside an emoji \ufffd\n\s+at /);
  });

  it('fails alone when its result is over maxResultBytes, naming the size, the limit and the option', async () => {
    const { lastError, id } = await runAmongOrdinary({ kind: 'result-bytes', bytes: 1_048_576 });
    parked.push(id);
    expect(lastError).toBe(
      'GrapevineError [GRAPEVINE_RESULT_TOO_LARGE]: the result is 1048578 bytes of JSON, over maxResultBytes (1048576 bytes), so it was not stored: ' +
        'store large data elsewhere and return a reference to it, or raise maxResultBytes',
    );
  });

  it('fails alone when only the database refuses its result, and the batch it shared is written job by job', async () => {
    const { lastError, id } = await runAmongOrdinary({ kind: 'result-number-overflow' });
    parked.push(id);
    expect(lastError).toMatch(
      /^GrapevineError \[GRAPEVINE_RESULT_UNSTORABLE\]: the job's result could not be stored, PostgreSQL refused it with 22003: value overflows numeric format;/,
    );
    expect(lastError).not.toContain('1e1000000');
  });

  it('stays failed, its attempts counted and its allowance unchanged, once its supervisor stops', async () => {
    expect(parked, 'the jobs the tests above failed for their results').toHaveLength(4);
    await supervisor.stop();
    const { rows } = await db.pool.query(`SELECT state, attempts, max_attempts FROM ${db.s}.jobs WHERE id = ANY($1::bigint[])`, [parked]);
    expect(rows).toHaveLength(parked.length);
    for (const row of rows) expect(row).toEqual({ state: 'failed', attempts: 1, max_attempts: 3 });
  });
});

// Over a minute and about 1.5 GB at its peak: outside the suite's budget, so
// .ci/run runs it once on its own with GRAPEVINE_TEST_HUGE_VALUES=1.
describe.runIf(process.env.GRAPEVINE_TEST_HUGE_VALUES === '1')('a result over the size jsonb can hold', () => {
  let supervisor: Supervisor;
  beforeAll(async () => {
    // Past jsonb's limit for one string (2^28 - 1 bytes) while under this one.
    supervisor = await startWarm({ maxResultBytes: 300 * 1024 * 1024 });
  });
  afterAll(() => supervisor?.stop({ graceMs: 0 }));

  // The slowest test of the file: the 256 MiB result goes to PostgreSQL
  // twice (with its batch, then alone), and each time the server parses all
  // of it before it refuses it. About 1.5 GB between the thread and the
  // server at the peak.
  it('fails its job alone, naming the limit PostgreSQL gave', { timeout: 240_000 }, async () => {
    const { lastError } = await runAmongOrdinary({ kind: 'result-bytes', bytes: 2 ** 28 }, { timeoutMs: 200_000 });
    expect(lastError).toMatch(
      /^GrapevineError \[GRAPEVINE_RESULT_UNSTORABLE\]: the job's result could not be stored, PostgreSQL refused it with 54000: string too long to represent as jsonb string/,
    );
  });
});
