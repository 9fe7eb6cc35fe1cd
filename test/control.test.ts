import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, createControl, describeConnection, GrapevineError, VERSION, type Control } from '../supervisor/public.ts';
import { silentLogger } from '../src/log.ts';
import { registerSupervisor } from '../src/sql/supervisors.ts';
import { pruneControlTables } from '../supervisor/maintenance/prune-control.ts';
import { SupervisorLog } from '../supervisor/supervisor-log.ts';
import { directDatabaseUrl, eventually, FIXTURE_TASKS, useTestSchema } from './helpers/db.ts';
import { ROOT, run, start, type Running } from './helpers/process.ts';

const db = useTestSchema('control');
const S = `"${db.schema}"`;
const SOURCE_CLI = path.join(ROOT, 'supervisor/cli.ts');
const env = { DATABASE_URL: db.url, GRAPEVINE_LOG_LEVEL: 'info' };
const cli = (...args: string[]) => run([SOURCE_CLI, ...args, '--schema', db.schema], env);

const client = createClient({ connectionString: db.url, schema: db.schema });
const control: Control = createControl({ connectionString: db.url, schema: db.schema });

interface Worker {
  id: string;
  process: Running;
}

let tasksDir = '';
let A: Worker; // two threads
let B: Worker; // one thread (two at most), started with --allow-eval
let C: Worker; // takes only queue "solo": the idle-timeout subject

async function startWorker(...args: string[]): Promise<Worker> {
  const proc = start([SOURCE_CLI, 'run', '--tasks', tasksDir, '--schema', db.schema, '--log-level', 'info', ...args], env);
  await proc.waitFor(/supervisor started/);
  const worker = await eventually(
    async () => (await control.supervisors()).find((w) => w.pid === proc.child.pid),
    'the supervisor to register',
  );
  return { id: worker.id, process: proc };
}

async function writeVersionTask(version: number): Promise<void> {
  await writeFile(path.join(tasksDir, 'version.mjs'), `export default async function version() { return { version: ${version} }; }\n`);
}

async function jobRows(ids: string[]): Promise<Array<{ id: string; state: string; attempts: number; locked_by: string | null }>> {
  const { rows } = await db.pool.query(
    `SELECT id::text, state, attempts, locked_by FROM ${S}.jobs WHERE id = ANY($1::bigint[]) ORDER BY id`,
    [ids],
  );
  return rows;
}

async function events(worker: string, n = 200): Promise<string[]> {
  return (await control.logTail({ supervisor: worker, n })).map((e) => `${e.event}${e.detail ? ` ${e.detail}` : ''}`);
}

/** The log once it holds an entry matching `pattern` (entries are written in batches, a moment after the fact). */
async function eventsOnce(worker: string, pattern: RegExp): Promise<string[]> {
  try {
    return await eventually(async () => {
      const e = await events(worker);
      return e.some((x) => pattern.test(x)) ? e : null;
    }, `${pattern} in the log of ${worker}`);
  } catch (err) {
    throw new Error(`${(err as Error).message}; the log:\n${(await events(worker)).join('\n')}`);
  }
}

beforeAll(async () => {
  tasksDir = await mkdtemp(path.join(os.tmpdir(), 'grapevine-control-'));
  for (const file of ['block.mjs', 'square.mjs', 'fail.mjs']) await copyFile(path.join(FIXTURE_TASKS, file), path.join(tasksDir, file));
  await writeFile(
    path.join(tasksDir, 'spin.mjs'),
    'export default async function spin({ ms }) { const end = Date.now() + ms; while (Date.now() < end); return { spun: ms }; }\n',
  );
  // Dies mid-run on its first attempt (not in its first tick, which can beat
  // the thread's report that it claimed the job), succeeds on the second.
  await writeFile(
    path.join(tasksDir, 'crash.mjs'),
    'export default async function crash(_, { job }) { if (job.attempt === 1) { await new Promise((r) => setTimeout(r, 100)); process.exit(1); } return { survived: job.attempt }; }\n',
  );
  await writeVersionTask(1);
  await client.migrate();
  [A, B, C] = await Promise.all([
    startWorker('--threads', '2', '--concurrency', '2', '--queue', 'default'),
    startWorker('--threads', '1', '--max-threads', '2', '--concurrency', '2', '--queue', 'default', '--allow-eval'),
    startWorker('--threads', '1', '--concurrency', '1', '--queue', 'solo'),
  ]);
});

afterAll(async () => {
  for (const w of [A, B, C]) if (w && w.process.child.exitCode === null) w.process.child.kill('SIGKILL');
  await control.close();
  await client.close();
  if (tasksDir) await rm(tasksDir, { recursive: true, force: true });
});

describe('supervisor registry', () => {
  it('registers each supervisor under a readable host-based id with its per-thread state', async () => {
    const prefix = os
      .hostname()
      .toLowerCase()
      .replace(/[^a-z0-9-]/g, '-')
      .slice(0, 24);
    for (const w of [A, B, C]) expect(w.id).toMatch(new RegExp(`^${prefix}-[0-9a-f]{6}$`));
    const workers = await eventually(async () => {
      const list = await control.supervisors();
      const a = list.find((w) => w.id === A.id);
      return a && a.threadStates.length === 2 ? list : null;
    }, 'a heartbeat with per-thread state');
    const a = workers.find((w) => w.id === A.id)!;
    expect(a).toMatchObject({ status: 'IDLE', host: os.hostname(), pid: A.process.child.pid, threads: 2, concurrency: 2 });
    expect(a.threadStates[0]).toMatchObject({ threadId: expect.any(Number), currentJobs: [], jobsRun: 0 });
    expect(workers.map((w) => w.id)).toEqual(expect.arrayContaining([A.id, B.id, C.id]));

    const listed = await cli('supervisors');
    expect(listed.code).toBe(0);
    for (const w of [A, B, C]) expect(listed.stdout).toMatch(new RegExp(`${w.id}\\s+(IDLE|BUSY)`));
  });

  it('logs ALIVE, QUEUE and THREADS when a supervisor starts', async () => {
    const log = await eventsOnce(C.id, /^THREADS/);
    expect(log.slice(0, 3)).toEqual([expect.stringMatching(/^ALIVE .*grapevine/), 'QUEUE solo', 'THREADS 1 x 1']);
  });
});

describe('supervisor log', () => {
  it('records task starts, completions and errors, and thread exits and restarts', async () => {
    const ok = await client.addJob('square', { n: 9 });
    const failed = await client.addJob('fail', { message: 'no' }, { maxAttempts: 1 });
    const crashed = await client.addJob('crash', {}, { maxAttempts: 2 });
    for (const id of [ok, failed, crashed]) await client.waitForJob(id, { timeoutMs: 20_000 });
    const [okRow, failedRow, crashedRow] = await jobRows([ok, failed, crashed]);
    expect(failedRow.state).toBe('failed');
    expect(crashedRow).toMatchObject({ state: 'succeeded', attempts: 2 });

    const has = (worker: string, pattern: RegExp) => eventsOnce(worker, pattern);
    await has(okRow.locked_by!, new RegExp(`^TASK_START ${ok} square$`));
    await has(okRow.locked_by!, new RegExp(`^TASK_COMPLETE ${ok} square$`));
    await has(failedRow.locked_by!, new RegExp(`^TASK_ERROR ${failed} fail \\(failed\\)$`));
    // The crash may have been on either supervisor (the retry then ran wherever).
    const expected = [
      /^THREAD_EXIT exit code 1 \(unexpected\)$/,
      /^THREAD_RESTART generation \d+$/,
      // The first attempt died with its thread; the second one succeeded.
      new RegExp(`^TASK_ERROR ${crashed} crash \\((pending|running|attempt 1 ended; job now (running|succeeded))\\)$`),
      new RegExp(`^TASK_COMPLETE ${crashed} crash$`),
    ];
    let log: string[] = [];
    try {
      await eventually(async () => {
        log = (await control.logTail({ n: 1_000 })).map((x) => `${x.event} ${x.detail}`);
        return expected.every((pattern) => log.some((line) => pattern.test(line)));
      }, 'thread exit, restart and both attempts in the log');
    } finally {
      if (!expected.every((pattern) => log.some((line) => pattern.test(line)))) console.error(log.join('\n'));
    }
  });
});

describe('messages and responses', () => {
  it('PING reaches every live supervisor and each answers PONG for itself', async () => {
    const responses = await control.sendAndWait('PING');
    expect(Object.keys(responses).sort()).toEqual([A.id, B.id, C.id].sort());
    for (const [worker, response] of Object.entries(responses)) {
      expect(response).toMatchObject({ supervisor: worker, command: 'PING', ok: true, value: 'PONG', error: null });
    }
    // sendAndWait deletes what it read.
    expect(Object.values(await control.hasResponse(responses[A.id].messageId))).toEqual([false, false, false]);
    const log = await eventsOnce(A.id, /^RESPONSE PING/);
    expect(log.filter((x) => /^(MESSAGE|RESPONSE) PING/.test(x))).toEqual([
      `MESSAGE PING (message ${responses[A.id].messageId})`,
      `RESPONSE PING PONG (message ${responses[A.id].messageId})`,
    ]);
  });

  it('keeps responses until deleted; hasResponse and responseIds see them; a missing one is an error naming the supervisor', async () => {
    const id = await control.send('PING', undefined, { supervisors: [A.id] });
    expect(await control.getResponse(id, { timeoutMs: 10_000 })).toEqual({
      [A.id]: expect.objectContaining({ value: 'PONG', messageId: id }),
    });
    expect(await control.hasResponse(id)).toEqual({ [A.id]: true });
    expect(await control.responseIds(A.id)).toContain(id);

    const got = await control.getResponse(id, { supervisor: A.id, delete: true });
    expect(got[A.id].value).toBe('PONG');
    const missing = await control.getResponse(id, { supervisor: A.id }).catch((e) => e);
    expect(missing).toBeInstanceOf(GrapevineError);
    expect(missing.code).toBe('GRAPEVINE_RESPONSE_MISSING');
    expect(missing.message).toContain(`response missing for supervisor: '${A.id}'`);
    expect(await control.hasResponse(id)).toEqual({ [A.id]: false });
    expect(await control.responseIds(A.id)).not.toContain(id);

    await expect(control.getResponse(id, { supervisor: B.id })).rejects.toThrow(/was not sent to it/);
    await expect(control.getResponse('987654321')).rejects.toThrow(/message 987654321 does not exist/);
    await expect(control.getResponse('nope')).rejects.toMatchObject({ code: 'GRAPEVINE_RESPONSE_MISSING' });
  });

  it("processes one supervisor's messages in the order they were sent (urgent ones may overtake, even a command under way), and waiting times out with the supervisor named", async () => {
    // REFRESH starts new threads, so the ECHOs queued behind it wait; the PING does not (its own lane).
    const refresh = await control.send('REFRESH', undefined, { supervisors: [B.id] });
    const ids: string[] = [];
    for (let i = 1; i <= 8; i++) ids.push(await control.send('ECHO', `order ${i}`, { supervisors: [B.id] }));
    const ping = await control.send('PING', undefined, { supervisors: [B.id] });
    // The last ECHO waits behind the REFRESH (the PING may be answered at once).
    const last = ids.at(-1)!;
    await expect(control.getResponse(last, { timeoutMs: 1 })).rejects.toThrow(
      new RegExp(`response missing for supervisor: '${B.id}' to message ${last} \\(ECHO\\) after waiting 1 ms`),
    );
    expect((await control.getResponse(ping, { timeoutMs: 20_000 }))[B.id].value).toBe('PONG');
    expect((await control.getResponse(refresh, { timeoutMs: 20_000 }))[B.id].value).toBe('OK');
    expect((await control.getResponse(last, { timeoutMs: 20_000 }))[B.id].value).toBe('OK');

    const { rows } = await db.pool.query(
      `SELECT message_id::text AS id FROM ${S}.responses WHERE worker = $1 AND message_id = ANY($2::bigint[]) ORDER BY responded_at, message_id`,
      [B.id, [refresh, ...ids, ping]],
    );
    // PING is urgent: read and handled on a lane of its own, it may be answered before any of
    // them, REFRESH included; the others keep the order they were sent in.
    const order = rows.map((r) => r.id);
    expect(order.filter((id) => id !== ping)).toEqual([refresh, ...ids]);
    expect(order).toContain(ping);
    const echoed = (await events(B.id)).filter((e) => e.startsWith('MESSAGE ECHO order'));
    expect(echoed.map((e) => e.split(' (')[0])).toEqual(ids.map((_, i) => `MESSAGE ECHO order ${i + 1}`));
  });

  it('ECHO logs its text and answers OK', async () => {
    const responses = await control.sendAndWait('ECHO', 'hello from the test', { supervisors: [A.id] });
    expect(responses[A.id].value).toBe('OK');
    await A.process.waitFor(/"msg":"hello from the test"/);
  });

  it('an ECHO whose logged text would be cut inside an emoji is answered, and so is the ECHO behind it', async () => {
    // The log keeps 200 UTF-16 units of a message's text: unit 200 is the first half of this emoji.
    const text = `${'x'.repeat(199)}😀 and more`;
    const echo = await control.send('ECHO', text, { supervisors: [A.id] });
    // Another ECHO, not a PING: urgent commands are read first, so a PING would not be behind it.
    const next = await control.sendAndWait('ECHO', 'next', { supervisors: [A.id] });
    expect(next[A.id].value).toBe('OK');
    expect((await control.getResponse(echo, { supervisor: A.id }))[A.id].value).toBe('OK');
    const logged = (await eventsOnce(A.id, /^MESSAGE ECHO x{199}/)).find((e) => e.startsWith('MESSAGE ECHO x'));
    expect(logged).toBe(`MESSAGE ECHO ${'x'.repeat(199)}… (message ${echo})`);
  });

  it('INFO describes the supervisor, with the connection target but never the password', async () => {
    const info = (await control.sendAndWait('INFO', undefined, { supervisors: [A.id] }))[A.id].value as Record<string, unknown>;
    expect(info).toMatchObject({
      supervisor: A.id,
      host: os.hostname(),
      pid: A.process.child.pid,
      platform: `${process.platform}-${process.arch}`,
      node: process.version,
      grapevine: VERSION,
      schema: db.schema,
      queues: ['default'],
      threads: 2,
      concurrency: 2,
      connection: describeConnection(db.url),
      status: 'IDLE',
      evalAllowed: false,
    });
    expect(info.tasks).toEqual(expect.arrayContaining(['block', 'crash', 'spin', 'square', 'version']));
    expect(new Date(info.startedAt as string).getTime()).not.toBeNaN();
    const password = decodeURIComponent(new URL(db.url).password);
    if (password) expect(JSON.stringify(info)).not.toContain(password);
    expect((await control.sendAndWait('INFO', undefined, { supervisors: [C.id] }))[C.id].value).toMatchObject({
      queues: ['solo'],
      threads: 1,
    });
  });

  it('answers unknown commands and bad arguments with an error response and keeps answering', async () => {
    const bad: Array<[string, unknown, RegExp]> = [
      ['FLY', undefined, /unknown command "FLY": use one of PING, ECHO/],
      ['SCALE', 'lots', /SCALE needs the new thread count, an integer from 1 to 256, got "lots"/],
      ['SCALE', 0, /SCALE needs .* got 0/],
      ['TIMEOUT_SET', -5, /TIMEOUT_SET needs the idle timeout in seconds/],
      ['TIMEOUT_SET', 'soon', /TIMEOUT_SET needs .* got "soon"/],
      ['ECHO', undefined, /ECHO needs the text to log/],
      ['EVAL', undefined, /EVAL is disabled/],
    ];
    for (const [command, args, message] of bad) {
      const response = (await control.sendAndWait(command, args, { supervisors: [A.id] }))[A.id];
      expect(response.ok, command).toBe(false);
      expect(response.error!.message).toMatch(message);
      expect(response.error!.code).toBe(command === 'EVAL' ? 'GRAPEVINE_COMMAND_REFUSED' : 'GRAPEVINE_COMMAND_INVALID');
    }
    expect((await control.sendAndWait('ping', undefined, { supervisors: [A.id] }))[A.id].value).toBe('PONG');
    expect(A.process.child.exitCode).toBeNull();
  });

  it('refuses to send what no supervisor could take, naming the problem', async () => {
    await expect(control.send('')).rejects.toMatchObject({ code: 'GRAPEVINE_COMMAND_INVALID' });
    await expect(control.send('DROP TABLE')).rejects.toThrow(/invalid command "DROP TABLE"/);
    await expect(control.send('ECHO', 10n)).rejects.toThrow(/not JSON-serializable/);
    await expect(control.send('ECHO', 'x'.repeat(70_000))).rejects.toThrow(/over the 65536-byte limit/);
    await expect(control.send('PING', undefined, { supervisors: ['nobody-000000'] })).rejects.toThrow(
      /supervisor 'nobody-000000' is not registered/,
    );
    await expect(control.send('PING', undefined, { supervisors: [] })).rejects.toMatchObject({ code: 'GRAPEVINE_SUPERVISOR_NOT_FOUND' });
    const empty = createControl({ connectionString: db.url, schema: `${db.schema}_none` });
    try {
      await expect(empty.send('PING')).rejects.toThrow(/no live supervisor in schema/);
    } finally {
      await empty.close();
      await db.pool.query(`DROP SCHEMA IF EXISTS "${db.schema}_none" CASCADE`);
    }
  });

  it('EVAL runs code only on a supervisor started with --allow-eval', async () => {
    const refused = await control.sendAndWait('EVAL', '6 * 7', { supervisors: [A.id] });
    expect(refused[A.id]).toMatchObject({ ok: false, error: { code: 'GRAPEVINE_COMMAND_REFUSED' } });
    const allowed = await control.sendAndWait('EVAL', '6 * 7', { supervisors: [B.id] });
    expect(allowed[B.id]).toMatchObject({ ok: true, value: 42 });
    expect((await control.sendAndWait('EVAL', 'Promise.resolve(process.pid)', { supervisors: [B.id] }))[B.id].value).toBe(
      B.process.child.pid,
    );
    const thrown = (await control.sendAndWait('EVAL', 'throw new Error("boom")', { supervisors: [B.id] }))[B.id];
    expect(thrown).toMatchObject({ ok: false, error: { code: 'GRAPEVINE_COMMAND_FAILED', message: expect.stringContaining('boom') } });
  });
});

describe('the grapevine CLI', () => {
  it("message prints each supervisor's response and exits 1 on an error response", async () => {
    const ping = await cli('message', 'PING', '--supervisor', A.id, '--supervisor', B.id, '--wait', '10');
    expect(ping.code).toBe(0);
    expect(ping.stdout.trim().split('\n').sort()).toEqual([`${A.id}: PONG`, `${B.id}: PONG`].sort());
    const bad = await cli('message', 'FLY', '--supervisor', A.id);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain(`${A.id}: ERROR GRAPEVINE_COMMAND_INVALID: unknown command "FLY"`);
    const gone = await cli('message', 'PING', '--supervisor', 'nobody-000000');
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/supervisor 'nobody-000000' is not registered/);
  });

  it('log prints the newest entries and --follow prints new ones as they come', async () => {
    const tail = await cli('log', '--supervisor', A.id, '-n', '3');
    expect(tail.code).toBe(0);
    const lines = tail.stdout.trim().split('\n');
    expect(lines).toHaveLength(3);
    for (const line of lines) expect(line).toMatch(new RegExp(`^\\[\\d{4}-.*Z\\] ${A.id} [A-Z_]+`));

    const follow = start([SOURCE_CLI, 'log', '--follow', '--supervisor', A.id, '-n', '1', '--schema', db.schema], env);
    try {
      await eventually(() => follow.stdout().includes(A.id), 'the follower to print the tail');
      await control.sendAndWait('ECHO', 'followed live', { supervisors: [A.id] });
      await follow.waitFor(/MESSAGE ECHO followed live/);
    } finally {
      follow.child.kill('SIGTERM');
    }
    expect((await follow.exited).code).toBe(0);
  });

  it('log prints message text with its control characters escaped, so an ECHO cannot drive the terminal', async () => {
    const id = await control.send('ECHO', 'paint \u001b[31mred\u001b[0m \u009b2J\u202eevil', { supervisors: [A.id] });
    await eventsOnce(A.id, new RegExp(`^RESPONSE ECHO OK \\(message ${id}\\)`));
    const tail = await cli('log', '--supervisor', A.id, '-n', '20');
    expect(tail.code).toBe(0);
    expect(tail.stdout).toContain('MESSAGE ECHO paint \\u001b[31mred\\u001b[0m \\u009b2J\\u202eevil');
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the escape sequence must not reach the terminal
    expect(tail.stdout).not.toMatch(/[\u001b\u009b\u202e]/);
  });
});

describe('log notifications', () => {
  it('wake followers only while one follows: with nobody following, log writes send no NOTIFY', async () => {
    // A NOTIFY holds a cluster-wide lock through its commit's flush, so the
    // log must not send one that nobody listens for.
    const raw = new pg.Client({ connectionString: directDatabaseUrl() });
    await raw.connect();
    const heard: string[] = [];
    raw.on('notification', (m) => heard.push(m.payload ?? ''));
    await raw.query(`LISTEN "${db.schema}_log"`);
    // A round trip on the listening connection delivers every notification already committed.
    const heardNow = async () => {
      await raw.query('SELECT 1');
      return heard.splice(0);
    };
    try {
      expect((await db.pool.query(`SELECT count(*)::int AS n FROM ${S}.log_followers`)).rows[0].n).toBe(0);
      await control.sendAndWait('ECHO', 'unfollowed', { supervisors: [A.id] });
      await eventsOnce(A.id, /MESSAGE ECHO unfollowed/);
      expect(await heardNow()).toEqual([]);

      const seen: string[] = [];
      const stop = await control.followLog({ supervisor: A.id }, (e) => seen.push(`${e.event} ${e.detail}`));
      try {
        await control.sendAndWait('ECHO', 'followed', { supervisors: [A.id] });
        await eventually(() => seen.some((e) => e.startsWith('MESSAGE ECHO followed')), 'the follower to see the entry');
        expect(await heardNow()).toContain(A.id);
      } finally {
        await stop();
      }
      // Writes that began while the follower was registered (the log is
      // flushed in batches) still notify; only those after stop() must not.
      await heardNow();

      expect((await db.pool.query(`SELECT count(*)::int AS n FROM ${S}.log_followers`)).rows[0].n).toBe(0);
      await control.sendAndWait('ECHO', 'unfollowed again', { supervisors: [A.id] });
      await eventsOnce(A.id, /MESSAGE ECHO unfollowed again/);
      expect(await heardNow()).toEqual([]);
    } finally {
      await raw.end();
    }
  });
});

describe('PAUSE and RESUME', () => {
  it('a paused supervisor leaves jobs to the others; with everyone paused jobs stay pending until RESUME', async () => {
    expect((await control.sendAndWait('PAUSE', undefined, { supervisors: [A.id] }))[A.id].value).toBe('OK');
    expect((await control.supervisors()).find((w) => w.id === A.id)!.status).toBe('PAUSED');

    const forB = await client.addJobs(Array.from({ length: 6 }, (_, i) => ({ task: 'square', payload: { n: i } })));
    for (const id of forB) expect((await client.waitForJob(id, { timeoutMs: 20_000 })).state).toBe('succeeded');
    expect(new Set((await jobRows(forB)).map((r) => r.locked_by))).toEqual(new Set([B.id]));

    await control.sendAndWait('PAUSE', undefined, { supervisors: [B.id] });
    const held = await client.addJobs(Array.from({ length: 4 }, (_, i) => ({ task: 'square', payload: { n: i } })));
    // The jobs' notification reached both before this PING did: both have seen the jobs and left them.
    await control.sendAndWait('PING', undefined, { supervisors: [A.id, B.id] });
    await new Promise((r) => setTimeout(r, 300));
    expect((await jobRows(held)).map((r) => r.state)).toEqual(['pending', 'pending', 'pending', 'pending']);
    const statuses = await control.supervisors();
    for (const w of [A, B]) expect(statuses.find((s) => s.id === w.id)!.status).toBe('PAUSED');

    const resumed = await control.sendAndWait('RESUME', undefined, { supervisors: [A.id, B.id] });
    expect(Object.values(resumed).map((r) => r.value)).toEqual(['OK', 'OK']);
    for (const id of held) expect((await client.waitForJob(id, { timeoutMs: 20_000 })).state).toBe('succeeded');
    expect((await control.supervisors()).find((w) => w.id === A.id)!.status).not.toBe('PAUSED');
    const log = await events(A.id);
    expect(log).toContain('PAUSE');
    expect(log).toContain('RESUME');
  });
});

describe('idle timeout', () => {
  it('TIMEOUT_GET reports no timeout until TIMEOUT_SET gives one, with the time remaining', async () => {
    expect((await control.sendAndWait('TIMEOUT_GET', undefined, { supervisors: [A.id] }))[A.id].value).toEqual({
      timeout: null,
      remaining: null,
    });
    expect((await control.sendAndWait('TIMEOUT_SET', '600', { supervisors: [A.id] }))[A.id].value).toBe('OK');
    const got = (await control.sendAndWait('TIMEOUT_GET', undefined, { supervisors: [A.id] }))[A.id].value as {
      timeout: number;
      remaining: number;
    };
    expect(got.timeout).toBe(600);
    expect(got.remaining).toBeGreaterThan(0);
    expect(got.remaining).toBeLessThanOrEqual(600);
    await control.sendAndWait('TIMEOUT_SET', 'none', { supervisors: [A.id] });
    expect((await control.sendAndWait('TIMEOUT_GET', undefined, { supervisors: [A.id] }))[A.id].value).toEqual({
      timeout: null,
      remaining: null,
    });
  });

  it('TIMEOUT_SET 0 after a batch of work makes the supervisor exit once the work is done', async () => {
    // Only C takes queue "solo", one job at a time: an early exit would leave jobs pending.
    const ids = await client.addJobs(Array.from({ length: 5 }, () => ({ task: 'spin', queue: 'solo', payload: { ms: 150 } })));
    expect((await control.sendAndWait('TIMEOUT_SET', 0, { supervisors: [C.id] }))[C.id].value).toBe('OK');
    const exit = await C.process.exited;
    expect(exit.code).toBe(0);
    const rows = await jobRows(ids);
    expect(rows.map((r) => r.state)).toEqual(ids.map(() => 'succeeded'));
    expect(new Set(rows.map((r) => r.locked_by))).toEqual(new Set([C.id]));
    expect((await control.supervisors()).find((w) => w.id === C.id)!.status).toBe('EXITED');
    const log = await events(C.id);
    expect(log).toEqual(expect.arrayContaining([expect.stringMatching(/^TIMEOUT no job for/), 'STOP idle timeout']));
    expect(log.filter((e) => e.startsWith('TASK_COMPLETE'))).toHaveLength(5);
    await expect(control.send('PING', undefined, { supervisors: [C.id] })).rejects.toThrow(new RegExp(`supervisor '${C.id}' is EXITED`));
  });
});

describe('REFRESH and SCALE', () => {
  it('REFRESH makes changed task code take effect without losing a running job', async () => {
    const before = await client.addJob('version');
    expect((await client.waitForJob(before)).result).toEqual({ version: 1 });

    await db.pool.query(`CREATE TABLE ${S}.gate (open boolean NOT NULL)`);
    await db.pool.query(`INSERT INTO ${S}.gate VALUES (false)`);
    const blocked = await client.addJobs([1, 2, 3].map((i) => ({ task: 'block', payload: { gate: `${S}.gate`, i } })));
    await eventually(async () => (await jobRows(blocked)).every((r) => r.state === 'running'), 'the blocked jobs to run');

    await writeVersionTask(2);
    // A task that did not exist when the supervisors started.
    await writeFile(path.join(tasksDir, 'added_later.mjs'), 'export default async function addedLater() { return { added: true }; }\n');
    const refreshed = await control.sendAndWait('REFRESH', undefined, { supervisors: [A.id, B.id], timeoutMs: 30_000 });
    expect(Object.values(refreshed).map((r) => r.value)).toEqual(['OK', 'OK']);
    await db.pool.query(`UPDATE ${S}.gate SET open = true`);
    for (const id of blocked) expect((await client.waitForJob(id, { timeoutMs: 20_000 })).state).toBe('succeeded');
    expect((await jobRows(blocked)).map((r) => r.attempts)).toEqual([1, 1, 1]);

    const after = await client.addJob('version');
    expect((await client.waitForJob(after)).result).toEqual({ version: 2 });
    // The registry lists it too (the fleet's look for unhandled tasks reads it), from the next heartbeat on.
    await eventually(async () => {
      const { rows } = await db.pool.query(
        `SELECT count(*)::int AS n FROM ${S}.supervisors WHERE id = ANY($1) AND 'added_later' = ANY(tasks)`,
        [[A.id, B.id]],
      );
      return rows[0].n === 2;
    }, 'both supervisors to list the added task');
    expect((await client.waitForJob(await client.addJob('added_later'))).result).toEqual({ added: true });
    expect(await events(A.id)).toEqual(expect.arrayContaining([expect.stringMatching(/^THREADS 2 x 2 \(refreshed/)]));
  });

  it('SCALE changes the live thread count and the supervisor keeps running jobs', async () => {
    const threadsOf = async (id: string) =>
      ((await control.sendAndWait('INFO', undefined, { supervisors: [id] }))[id].value as { threadStates: unknown[] }).threadStates.length;
    expect((await control.sendAndWait('SCALE', 3, { supervisors: [A.id] }))[A.id].value).toBe('OK');
    await eventually(async () => (await threadsOf(A.id)) === 3, 'three live threads');
    await eventually(
      async () => (await control.supervisors()).find((w) => w.id === A.id)!.threadStates.length === 3,
      'the registry to show three threads',
    );
    expect(((await control.sendAndWait('INFO', undefined, { supervisors: [A.id] }))[A.id].value as { threads: number }).threads).toBe(3);

    await control.sendAndWait('SCALE', '1', { supervisors: [A.id] });
    await eventually(async () => (await threadsOf(A.id)) === 1, 'one live thread');
    await control.sendAndWait('PAUSE', undefined, { supervisors: [B.id] });
    try {
      const ids = await client.addJobs(Array.from({ length: 5 }, (_, i) => ({ task: 'square', payload: { n: i } })));
      for (const id of ids) expect((await client.waitForJob(id, { timeoutMs: 20_000 })).state).toBe('succeeded');
      expect(new Set((await jobRows(ids)).map((r) => r.locked_by))).toEqual(new Set([A.id]));
    } finally {
      await control.sendAndWait('RESUME', undefined, { supervisors: [B.id] });
    }
    expect(await events(A.id)).toEqual(expect.arrayContaining(['THREADS 3 x 2 (scaled)', 'THREADS 1 x 2 (scaled)']));
  });

  it('SCALE over maxThreads is refused, naming the cap and the option, and the thread count stays', async () => {
    const response = (await control.sendAndWait('SCALE', 3, { supervisors: [B.id] }))[B.id];
    expect(response.ok).toBe(false);
    expect(response.error).toMatchObject({ code: 'GRAPEVINE_COMMAND_INVALID' });
    expect(response.error!.message).toMatch(/SCALE 3 is over this supervisor's maxThreads \(2\).*--max-threads/);
    const info = (await control.sendAndWait('INFO', undefined, { supervisors: [B.id] }))[B.id].value as {
      threads: number;
      threadStates: unknown[];
    };
    expect(info.threads).toBe(1);
    expect(info.threadStates).toHaveLength(1);
    expect(await events(B.id)).not.toEqual(expect.arrayContaining([expect.stringMatching(/^THREADS 3 /)]));
  });
});

describe('stopping', () => {
  it('a supervisor that stops heartbeating is listed as LOST and cannot be sent to', async () => {
    A.process.child.kill('SIGKILL');
    await A.process.exited;
    const watcher = createControl({ connectionString: db.url, schema: db.schema, lostAfterMs: 2_500 });
    try {
      await eventually(async () => (await watcher.supervisors()).find((w) => w.id === A.id)!.status === 'LOST', 'A to be LOST');
      await expect(watcher.send('PING', undefined, { supervisors: [A.id] })).rejects.toThrow(new RegExp(`supervisor '${A.id}' is LOST`));
      // "Every live supervisor" no longer includes it.
      expect(Object.keys(await watcher.sendAndWait('PING'))).toEqual([B.id]);
    } finally {
      await watcher.close();
    }
  });

  it('STOP stops gracefully with its reason: BYE, EXITED in the registry, exit code 0', async () => {
    const bye = await control.sendAndWait('STOP', 'maintenance window', { supervisors: [B.id] });
    expect(bye[B.id].value).toBe('BYE');
    const exit = await B.process.exited;
    expect(exit.code).toBe(0);
    expect(exit.stdout).toMatch(/"msg":"STOP maintenance window"/);
    expect((await control.supervisors()).find((w) => w.id === B.id)!.status).toBe('EXITED');
    expect(await events(B.id)).toContain('STOP maintenance window');
  });
});

describe('control table pruning (a maintenance chore)', () => {
  it("keeps each supervisor's newest log entries, drops everyone's past the age limit, and old messages and responses", async () => {
    await registerSupervisor(db.pool, db.schema, {
      id: 'prune-test',
      host: 'test',
      pid: 1,
      version: '0',
      threads: 1,
      concurrency: 1,
      queues: null,
      tasks: [],
    });
    const log = new SupervisorLog({ pool: db.pool, schema: db.schema, supervisor: 'prune-test', logger: silentLogger() });
    for (let i = 0; i < 30; i++) log.append('MESSAGE', `entry ${i}`);
    await log.flush();
    await db.pool.query(`INSERT INTO ${S}.worker_log (worker, at, event) VALUES ('long-gone', now() - interval '8 days', 'ALIVE')`);
    const { rows } = await db.pool.query(
      `INSERT INTO ${S}.messages (id, worker, command, sent_at) VALUES (nextval('${S}.message_ids'), 'prune-test', 'PING', now() - interval '2 days') RETURNING id::text`,
    );
    const sent = rows[0].id as string;
    await db.pool.query(
      `INSERT INTO ${S}.responses (message_id, worker, command, ok, responded_at) VALUES ($1, 'prune-test', 'PING', true, now() - interval '2 days')`,
      [sent],
    );
    await pruneControlTables(db.pool, { schema: db.schema, logKeep: 10, logMaxAgeMs: 7 * 24 * 3_600_000, messageMaxAgeMs: 24 * 3_600_000 });
    const kept = await control.logTail({ supervisor: 'prune-test', n: 100 });
    expect(kept.map((e) => e.detail)).toEqual(Array.from({ length: 10 }, (_, i) => `entry ${20 + i}`));
    expect(await control.logTail({ supervisor: 'long-gone' })).toEqual([]);
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM ${S}.messages WHERE id = $1`, [sent])).rows[0].n).toBe(0);
    expect((await db.pool.query(`SELECT count(*)::int AS n FROM ${S}.responses WHERE message_id = $1`, [sent])).rows[0].n).toBe(0);
    await log.close();
  });
});
