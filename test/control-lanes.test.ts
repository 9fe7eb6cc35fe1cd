import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createControl, type Control, type Supervisor } from '../supervisor/public.ts';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';

/**
 * Urgent commands have their own lane: a command that never settles (an
 * EVAL, a REFRESH whose new threads never load) holds up the messages sent
 * after it, but not a PING or a STOP; and a STOP answers the stuck one with
 * an error, so it is processed once and never runs again. Everything is
 * read back from the tables; nothing is timed.
 */
const db = useMigratedSchema('control_lanes');
let control: Control;
const started: Supervisor[] = [];

beforeAll(() => {
  control = createControl({ connectionString: db.url, schema: db.schema });
});
afterAll(async () => {
  await control?.close();
  for (const s of started) await s.stop({ graceMs: 0 });
});

async function start(options: Parameters<typeof startTestSupervisor>[1]): Promise<Supervisor> {
  const s = await startTestSupervisor(db, { threads: 1, concurrency: 1, ...options });
  started.push(s);
  return s;
}

async function logOf(id: string): Promise<string[]> {
  return (await control.logTail({ supervisor: id, n: 500 })).map((e) => `${e.event}${e.detail ? ` ${e.detail}` : ''}`);
}

async function messageRows(ids: string[]): Promise<{ id: string; processed: boolean }[]> {
  const { rows } = await db.pool.query(
    `SELECT id::text, processed_at IS NOT NULL AS processed FROM ${db.s}.messages WHERE id = ANY($1::bigint[]) ORDER BY id`,
    [ids],
  );
  return rows;
}

/** Until the supervisor's log says it began handling this message. */
function handling(supervisor: string, command: string, id: string): Promise<string[]> {
  return eventually(async () => {
    const log = await logOf(supervisor);
    return log.some((e) => e.startsWith(`MESSAGE ${command}`) && e.endsWith(`(message ${id})`)) ? log : null;
  }, `${command} message ${id} in progress`);
}

describe('an EVAL that never settles', () => {
  it('does not hold up PING or STOP; STOP answers it with an error and it does not run again after a restart', async () => {
    const first = await start({ allowEval: true });
    const to = { supervisors: [first.id] };
    const evalId = await control.send('EVAL', 'new Promise(() => {})', to);
    await handling(first.id, 'EVAL', evalId);
    // Sent after the EVAL, on its lane: it waits, as the order of sending says.
    const echo = await control.send('ECHO', 'behind the EVAL', to);

    const pong = await control.sendAndWait('PING', undefined, { ...to, timeoutMs: 30_000 });
    expect(pong[first.id]).toMatchObject({ ok: true, value: 'PONG' });
    expect(await control.hasResponse(evalId)).toEqual({ [first.id]: false });
    expect(await control.hasResponse(echo)).toEqual({ [first.id]: false });
    expect(await messageRows([evalId, echo])).toEqual([
      { id: evalId, processed: false },
      { id: echo, processed: false },
    ]);
    expect(first.status().state).not.toBe('EXITED');

    const bye = await control.sendAndWait('STOP', 'stuck EVAL', { ...to, timeoutMs: 30_000 });
    expect(bye[first.id]).toMatchObject({ ok: true, value: 'BYE' });
    await first.stop();
    expect(first.status().state).toBe('EXITED');

    expect((await control.getResponse(evalId))[first.id]).toMatchObject({
      ok: false,
      error: { code: 'GRAPEVINE_SHUTDOWN', message: expect.stringContaining('still running') },
    });
    // The ECHO behind it ran once the EVAL was answered, or was answered at shutdown: either way, answered.
    expect((await control.hasResponse(echo))[first.id]).toBe(true);
    expect(await messageRows([evalId, echo])).toEqual([
      { id: evalId, processed: true },
      { id: echo, processed: true },
    ]);

    // The same supervisor id again (once its EXITED row is pruned, as the
    // reaper prunes them): the EVAL is not run a second time.
    await db.pool.query(`DELETE FROM ${db.s}.supervisors WHERE id = $1 AND status = 'EXITED'`, [first.id]);
    const again = await start({ allowEval: true, id: first.id });
    expect((await control.sendAndWait('PING', undefined, { ...to, timeoutMs: 30_000 }))[again.id].value).toBe('PONG');
    const log = await logOf(first.id);
    expect(log.filter((e) => e.startsWith('MESSAGE EVAL'))).toHaveLength(1);
    expect((await control.getResponse(evalId))[first.id].error?.code).toBe('GRAPEVINE_SHUTDOWN');
    await again.stop({ graceMs: 0 });
  });
});

describe('a stop that is not a STOP message (stop(), as on SIGTERM)', () => {
  it('does not wait for an EVAL that never settles, and answers it with an error', async () => {
    const supervisor = await start({ allowEval: true });
    const evalId = await control.send('EVAL', 'new Promise(() => {})', { supervisors: [supervisor.id] });
    await handling(supervisor.id, 'EVAL', evalId);
    await supervisor.stop();
    expect(supervisor.status().state).toBe('EXITED');
    expect((await control.getResponse(evalId))[supervisor.id]).toMatchObject({ ok: false, error: { code: 'GRAPEVINE_SHUTDOWN' } });
    expect(await messageRows([evalId])).toEqual([{ id: evalId, processed: true }]);
  });
});

describe('a REFRESH whose new threads never load', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'grapevine-stuck-import-'));
  const gate = path.join(dir, 'stuck');
  afterAll(() => {
    delete process.env.GRAPEVINE_TEST_STUCK_IMPORT;
    rmSync(dir, { recursive: true, force: true });
  });

  it('does not hold up PING, PAUSE or RESUME while a handler that never finishes runs; STOP answers it with an error', async () => {
    process.env.GRAPEVINE_TEST_STUCK_IMPORT = gate;
    const supervisor = await start({
      tasks: path.resolve(import.meta.dirname, 'fixtures/stuck-import-tasks'),
      shutdownGraceMs: 60_000,
    });
    const to = { supervisors: [supervisor.id] };
    // A handler that never finishes, within the (long) grace of a stop.
    const job = await db.client.addJob('hang', {});
    await eventually(async () => {
      const { rows } = await db.pool.query(`SELECT state FROM ${db.s}.jobs WHERE id = $1`, [job]);
      return rows[0]?.state === 'running';
    }, 'the hang job running');

    // From now on the task module's import never finishes: the REFRESH's threads never start.
    writeFileSync(gate, '');
    const refresh = await control.send('REFRESH', undefined, to);
    await handling(supervisor.id, 'REFRESH', refresh);

    for (const [command, value] of [
      ['PING', 'PONG'],
      ['PAUSE', 'OK'],
      ['RESUME', 'OK'],
    ]) {
      const answer = await control.sendAndWait(command, undefined, { ...to, timeoutMs: 30_000 });
      expect(answer[supervisor.id], command).toMatchObject({ ok: true, value });
    }
    expect(await control.hasResponse(refresh)).toEqual({ [supervisor.id]: false });

    // STOP is answered at once; the stuck REFRESH is answered with an error, not waited for.
    const bye = await control.sendAndWait('STOP', 'stuck REFRESH', { ...to, timeoutMs: 30_000 });
    expect(bye[supervisor.id].value).toBe('BYE');
    const answer = await control.getResponse(refresh, { supervisor: supervisor.id, timeoutMs: 30_000 });
    expect(answer[supervisor.id]).toMatchObject({ ok: false, error: { code: 'GRAPEVINE_SHUTDOWN' } });
    expect(await messageRows([refresh])).toEqual([{ id: refresh, processed: true }]);
    await supervisor.stop({ graceMs: 0 });
    expect(supervisor.status().state).toBe('EXITED');
  });
});

describe('two lanes and racing wake-ups', () => {
  it('handle each message once', async () => {
    const supervisor = await start({});
    const to = { supervisors: [supervisor.id] };
    // Each send notifies: many wake-ups race, on both lanes.
    const ids = await Promise.all(
      Array.from({ length: 40 }, (_, i) => control.send(i % 2 === 0 ? 'ECHO' : 'PING', i % 2 === 0 ? `race ${i}` : undefined, to)),
    );
    await eventually(async () => (await messageRows(ids)).every((m) => m.processed), 'every message processed');
    const handled = await eventually(async () => {
      const log = await logOf(supervisor.id);
      const messages = log.filter((e) => e.startsWith('MESSAGE '));
      return messages.length >= ids.length ? messages : null;
    }, 'the MESSAGE entries in the log');
    const counts = new Map<string, number>();
    for (const e of handled) {
      const id = /\(message (\d+)\)$/.exec(e)?.[1];
      if (id) counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    expect(ids.map((id) => counts.get(id))).toEqual(ids.map(() => 1));
    await supervisor.stop({ graceMs: 0 });
  });
});
