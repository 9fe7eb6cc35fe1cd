import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createControl, type Control, type Supervisor } from '../supervisor/public.ts';
import { MESSAGES_PER_READ } from '../supervisor/control.ts';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';

/**
 * One control message can never hold up the ones behind it: not a message
 * whose response the database refuses, and not a flood of 20,000 others in
 * front of an operator's PING or STOP. Everything is read back from the
 * tables, never from how long something took.
 */
const db = useMigratedSchema('control_poison');
let supervisor: Supervisor;
let control: Control;

beforeAll(async () => {
  supervisor = await startTestSupervisor(db, { threads: 1, concurrency: 1 });
  control = createControl({ connectionString: db.url, schema: db.schema });
});
afterAll(async () => {
  await control?.close();
  await supervisor?.stop({ graceMs: 0 });
});

async function logOf(id: string): Promise<string[]> {
  return (await control.logTail({ supervisor: id, n: 500 })).map((e) => `${e.event}${e.detail ? ` ${e.detail}` : ''}`);
}

describe('a control message that fails', () => {
  it('is answered with an error, even when the database refuses its response and its error response, and the next message runs', async () => {
    const to = { supervisors: [supervisor.id] };
    // Processing throws (an unknown command): an error response, then the ECHO behind it (not
    // a PING: urgent commands are read first, so a PING would not be behind it).
    const fly = await control.send('FLY', undefined, to);
    expect((await control.sendAndWait('ECHO', 'after FLY', { ...to, timeoutMs: 30_000 }))[supervisor.id].value).toBe('OK');
    expect((await control.getResponse(fly))[supervisor.id]).toMatchObject({ ok: false, error: { code: 'GRAPEVINE_COMMAND_INVALID' } });

    // Responses the database refuses, by real constraints: INFO's answer; TIMEOUT_GET's
    // answer and the error response naming the refusal; every response to FLY.
    await db.pool.query(`ALTER TABLE ${db.s}.responses
      ADD CONSTRAINT no_info_answer CHECK (command <> 'INFO' OR NOT ok) NOT VALID,
      ADD CONSTRAINT no_timeout_get_answer CHECK (command <> 'TIMEOUT_GET' OR (NOT ok AND error->>'message' NOT LIKE '%violates%')) NOT VALID,
      ADD CONSTRAINT no_fly_answer CHECK (command <> 'FLY') NOT VALID`);
    let info = '';
    try {
      info = await control.send('INFO', undefined, to);
      const timeoutGet = await control.send('TIMEOUT_GET', undefined, to);
      const fly2 = await control.send('FLY', undefined, to);
      const echo = await control.sendAndWait('ECHO', 'after the refused ones', { ...to, timeoutMs: 30_000 });
      expect(echo[supervisor.id].value).toBe('OK');

      expect((await control.getResponse(info))[supervisor.id]).toMatchObject({
        ok: false,
        value: null,
        error: {
          code: 'GRAPEVINE_RESPONSE_UNSTORABLE',
          message: expect.stringMatching(
            new RegExp(`supervisor ${supervisor.id} processed this INFO message but the database refused its response: .*no_info_answer`),
          ),
        },
      });
      expect((await control.getResponse(timeoutGet))[supervisor.id]).toMatchObject({
        ok: false,
        error: {
          code: 'GRAPEVINE_RESPONSE_UNSTORABLE',
          message: 'the supervisor processed this message but the database refused its response',
        },
      });
      // Not even the generic one could be stored: no answer, but processed all the same.
      expect(await control.hasResponse(fly2)).toEqual({ [supervisor.id]: false });
      const { rows } = await db.pool.query(
        `SELECT id::text, processed_at IS NOT NULL AS processed FROM ${db.s}.messages WHERE id = ANY($1::bigint[]) ORDER BY id`,
        [[info, timeoutGet, fly2]],
      );
      expect(rows).toEqual([info, timeoutGet, fly2].map((id) => ({ id, processed: true })));
    } finally {
      await db.pool.query(`ALTER TABLE ${db.s}.responses
        DROP CONSTRAINT no_info_answer, DROP CONSTRAINT no_timeout_get_answer, DROP CONSTRAINT no_fly_answer`);
    }

    // The log entries the generic response left out are written with a later one.
    const log = await eventually(async () => {
      const entries = await logOf(supervisor.id);
      return entries.some((e) => e.startsWith('MESSAGE TIMEOUT_GET')) && entries.some((e) => /^MESSAGE FLY \(message/.test(e))
        ? entries
        : null;
    }, 'the log entries of the refused responses');
    expect(log).toContain(`RESPONSE INFO ERROR GRAPEVINE_RESPONSE_UNSTORABLE (message ${info})`);
  });
});

describe('urgent messages behind a flood', () => {
  it('PING, PAUSE, RESUME and STOP are answered before 20,000 queued ECHOs are', async () => {
    const flood = 20_000;
    await db.pool.query(
      `INSERT INTO ${db.s}.messages (id, worker, command, args)
       SELECT nextval('${db.s}.message_ids'), $1, 'ECHO', to_jsonb('flood ' || g) FROM generate_series(1, $2::int) g`,
      [supervisor.id, flood],
    );
    const to = { supervisors: [supervisor.id], timeoutMs: 60_000 };
    const urgent: string[] = [];
    for (const command of ['PING', 'PAUSE', 'RESUME', 'STOP']) {
      const id = await control.send(command, undefined, to);
      urgent.push(id);
      await control.getResponse(id, to);
    }
    const answers = await Promise.all(urgent.map(async (id) => (await control.getResponse(id))[supervisor.id]));
    expect(answers.map((a) => [a.command, a.value])).toEqual([
      ['PING', 'PONG'],
      ['PAUSE', 'OK'],
      ['RESUME', 'OK'],
      ['STOP', 'BYE'],
    ]);

    // For each: how many ECHOs were answered before it, and how many between its sending and its answer.
    const { rows } = await db.pool.query(
      `SELECT r.command,
              (SELECT count(*)::int FROM ${db.s}.responses e
                WHERE e.worker = r.worker AND e.command = 'ECHO' AND e.responded_at <= r.responded_at) AS before,
              (SELECT count(*)::int FROM ${db.s}.responses e
                WHERE e.worker = r.worker AND e.command = 'ECHO' AND e.responded_at > m.sent_at AND e.responded_at <= r.responded_at) AS meanwhile
         FROM ${db.s}.responses r JOIN ${db.s}.messages m ON m.id = r.message_id AND m.worker = r.worker
        WHERE r.worker = $1 AND r.message_id = ANY($2::bigint[])
        ORDER BY r.message_id`,
      [supervisor.id, urgent],
    );
    expect(rows.map((r) => r.command)).toEqual(['PING', 'PAUSE', 'RESUME', 'STOP']);
    for (const row of rows) {
      expect(row.before, row.command).toBeLessThan(flood);
      // Urgent messages have their own lane: the ECHOs answered meanwhile ran beside it, not before it.
      expect(row.meanwhile, row.command).toBeLessThanOrEqual(2 * MESSAGES_PER_READ);
    }
  });
});
