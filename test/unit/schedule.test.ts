import { describe, expect, it } from 'vitest';
import { GrapevineError } from '../../src/errors.ts';
import { cronOf, parseSchedule, parseSchedules, type Schedule } from '../../src/schedule/schedule.ts';
import { nextTicks } from '../../src/schedule/ticks.ts';

const iso = (ticks: Date[]): string[] => ticks.map((tick) => tick.toISOString());

function schedule(cron: string, more: Record<string, unknown> = {}): Schedule {
  return parseSchedule({ name: 'nightly', cron, task: 'report', ...more });
}

function scheduleErrorOf(spec: unknown): GrapevineError {
  try {
    parseSchedule(spec);
  } catch (err) {
    expect(err).toBeInstanceOf(GrapevineError);
    expect((err as GrapevineError).code).toBe('GRAPEVINE_SCHEDULE_INVALID');
    return err as GrapevineError;
  }
  throw new Error(`parseSchedule accepted ${JSON.stringify(spec)}`);
}

describe('parseSchedule', () => {
  it("fills every default: UTC, the default queue, priority 0, the task's attempts (null), an empty payload, missed ticks skipped", () => {
    expect(schedule('0 3 * * *')).toEqual({
      name: 'nightly',
      cron: '0 3 * * *',
      task: 'report',
      payload: {},
      tz: 'UTC',
      queue: 'default',
      priority: 0,
      maxAttempts: null,
      missed: 'skip',
    });
  });

  it('keeps every given field, with the zone in its canonical spelling and the expression on single spaces', () => {
    const s = schedule('  0   3 * *   MON-FRI ', {
      payload: { full: true },
      tz: 'europe/paris',
      queue: 'reports',
      priority: -5,
      maxAttempts: 2,
      missed: { backfill: 3 },
    });
    expect(s).toEqual({
      name: 'nightly',
      cron: '0 3 * * MON-FRI',
      task: 'report',
      payload: { full: true },
      tz: 'Europe/Paris',
      queue: 'reports',
      priority: -5,
      maxAttempts: 2,
      missed: { backfill: 3 },
    });
    expect(Object.isFrozen(s)).toBe(true);
  });

  it("copies the payload, so a later change to the caller's object changes nothing", () => {
    const payload = { n: 1 };
    const s = schedule('@daily', { payload });
    payload.n = 2;
    expect(s.payload).toEqual({ n: 1 });
  });

  it.each([
    ['the spec is not an object', 'daily', /a schedule is an object/],
    ['the name is missing', { cron: '@daily', task: 'report' }, /invalid name nothing: use 1-128 characters/],
    ['the name has a space', { name: 'my job', cron: '@daily', task: 'report' }, /invalid name "my job"/],
    [
      'a field is unknown (timezone for tz)',
      { name: 'n', cron: '@daily', task: 'report', timezone: 'UTC' },
      /schedule "n": unknown field "timezone": the fields are name, cron, task, payload, tz/,
    ],
    [
      'cron is missing',
      { name: 'n', task: 'report' },
      /schedule "n": cron must be a cron expression such as "30 2 \* \* \*" or "@daily", got nothing/,
    ],
    ['the task is missing', { name: 'n', cron: '@daily' }, /schedule "n": invalid task name undefined/],
    ['the queue has a space', { name: 'n', cron: '@daily', task: 'report', queue: 'a b' }, /schedule "n": invalid queue name "a b"/],
    [
      'priority is a fraction',
      { name: 'n', cron: '@daily', task: 'report', priority: 1.5 },
      /schedule "n": priority must be an integer from -32768 to 32767, got 1.5/,
    ],
    [
      'maxAttempts is 0',
      { name: 'n', cron: '@daily', task: 'report', maxAttempts: 0 },
      /schedule "n": maxAttempts must be an integer from 1 to 1000, got 0/,
    ],
    [
      'the payload is a BigInt',
      { name: 'n', cron: '@daily', task: 'report', payload: { n: 1n } },
      /schedule "n": payload is not JSON-serializable/,
    ],
    [
      'the payload is a function',
      { name: 'n', cron: '@daily', task: 'report', payload: () => 1 },
      /schedule "n": payload is not JSON \(got function\)/,
    ],
  ])('refuses a schedule whose %s', (_what, spec, message) => {
    expect(scheduleErrorOf(spec).message).toMatch(message);
  });

  it.each([
    ['sometimes'],
    [{ backfill: 0 }],
    [{ backfill: 1001 }],
    [{ backfill: 2.5 }],
    [{ backfill: '3' }],
    [{ backfill: 3, extra: true }],
    [{}],
  ])('refuses the missed-tick policy %j, naming the three policies', (missed) => {
    expect(scheduleErrorOf({ name: 'n', cron: '@daily', task: 'report', missed }).message).toBe(
      `schedule "n": missed must be 'skip', 'once' or { backfill: N } with N from 1 to 1000, got ${JSON.stringify(missed)}`,
    );
  });

  it('accepts each missed-tick policy', () => {
    expect(schedule('@daily', { missed: 'skip' }).missed).toBe('skip');
    expect(schedule('@daily', { missed: 'once' }).missed).toBe('once');
    expect(schedule('@daily', { missed: { backfill: 1000 } }).missed).toEqual({ backfill: 1000 });
  });
});

describe('cron expressions', () => {
  const after = new Date('2025-06-15T10:20:30Z'); // a Sunday

  it('reads 5 fields minute first, at second 0', () => {
    expect(iso(nextTicks(schedule('*/20 10-11 * * *'), after, 4))).toEqual([
      '2025-06-15T10:40:00.000Z',
      '2025-06-15T11:00:00.000Z',
      '2025-06-15T11:20:00.000Z',
      '2025-06-15T11:40:00.000Z',
    ]);
  });

  it('reads 6 fields second first', () => {
    expect(iso(nextTicks(schedule('*/20 * * * * *'), after, 3))).toEqual([
      '2025-06-15T10:20:40.000Z',
      '2025-06-15T10:21:00.000Z',
      '2025-06-15T10:21:20.000Z',
    ]);
    expect(iso(nextTicks(schedule('15 30 2 * * *'), after, 1))).toEqual(['2025-06-16T02:30:15.000Z']);
  });

  it('reads day and month names, and either day field matching (as cron does when both are given)', () => {
    expect(iso(nextTicks(schedule('0 9 * JUN MON-FRI'), after, 2))).toEqual(['2025-06-16T09:00:00.000Z', '2025-06-17T09:00:00.000Z']);
    // The 20th, or any Monday.
    expect(iso(nextTicks(schedule('0 0 20 * MON'), after, 3))).toEqual([
      '2025-06-16T00:00:00.000Z',
      '2025-06-20T00:00:00.000Z',
      '2025-06-23T00:00:00.000Z',
    ]);
  });

  it.each([
    ['@hourly', '2025-06-15T11:00:00.000Z'],
    ['@daily', '2025-06-16T00:00:00.000Z'],
    ['@midnight', '2025-06-16T00:00:00.000Z'],
    ['@weekly', '2025-06-22T00:00:00.000Z'],
    ['@monthly', '2025-07-01T00:00:00.000Z'],
    ['@yearly', '2026-01-01T00:00:00.000Z'],
    ['@annually', '2026-01-01T00:00:00.000Z'],
  ])('reads the shorthand %s', (cron, next) => {
    expect(iso(nextTicks(schedule(cron), after, 1))).toEqual([next]);
  });

  it('reads shorthands in any case and keeps them lowercase', () => {
    expect(schedule('@Daily').cron).toBe('@daily');
  });

  it("reads the expression in the schedule's zone: 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer", () => {
    const paris = schedule('0 9 * * *', { tz: 'Europe/Paris' });
    expect(iso(nextTicks(paris, new Date('2025-01-10T12:00:00Z'), 1))).toEqual(['2025-01-11T08:00:00.000Z']);
    expect(iso(nextTicks(paris, new Date('2025-07-10T12:00:00Z'), 1))).toEqual(['2025-07-11T07:00:00.000Z']);
    const kolkata = schedule('0 9 * * *', { tz: 'Asia/Kolkata' });
    expect(iso(nextTicks(kolkata, new Date('2025-07-10T12:00:00Z'), 1))).toEqual(['2025-07-11T03:30:00.000Z']);
  });

  it.each([
    ['61 * * * *', 'the minute field "61" is invalid: use 0-59'],
    ['0 24 * * *', 'the hour field "24" is invalid: use 0-23'],
    ['0 0 32 * *', 'the day-of-month field "32" is invalid: use 1-31'],
    ['0 0 0 * *', 'the day-of-month field "0" is invalid: use 1-31'],
    ['0 0 * 13 *', 'the month field "13" is invalid: use 1-12 or JAN-DEC'],
    ['0 0 * * 8', 'the day-of-week field "8" is invalid: use 0-7 (0 and 7 are Sunday) or SUN-SAT'],
    ['60 0 0 * * *', 'the second field "60" is invalid: use 0-59'],
    ['*/0 * * * *', 'the minute field "*/0" is invalid (Syntax error, illegal stepping: 0): use 0-59'],
    ['0 5-1 * * *', 'the hour field "5-1" is invalid (From value is larger than to value'],
    ['0 0 * * FUNDAY', 'the day-of-week field "FUNDAY" is invalid'],
    ['x * * * *', 'the minute field "x" is invalid (contains illegal characters): use 0-59'],
  ])('names the wrong field of %s', (cron, problem) => {
    const message = scheduleErrorOf({ name: 'n', cron, task: 'report' }).message;
    expect(message).toContain(`schedule "n": invalid cron "${cron}": ${problem}`);
  });

  it.each([
    ['* * * *', 'has 4 fields: write 5 (minute hour day-of-month month day-of-week), 6 (second first) or a shorthand such as @daily'],
    ['0 0 0 1 1 * 2030', 'has 7 fields'],
    ['*', 'has 1 field:'],
  ])('refuses %s for its number of fields', (cron, problem) => {
    expect(scheduleErrorOf({ name: 'n', cron, task: 'report' }).message).toContain(`cron "${cron}" ${problem}`);
  });

  it.each(['@often', '@reboot', '@daily 5'])('refuses the unknown shorthand %s, listing the known ones', (cron) => {
    expect(scheduleErrorOf({ name: 'n', cron, task: 'report' }).message).toBe(
      `schedule "n": unknown cron shorthand "${cron}": use one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly`,
    );
  });

  it('refuses an expression that names no date (February 30th)', () => {
    expect(scheduleErrorOf({ name: 'n', cron: '0 0 30 2 *', task: 'report' }).message).toBe(
      'schedule "n": cron "0 0 30 2 *" never fires: no date matches its day-of-month, month and day-of-week together',
    );
  });

  it('accepts February 29th, which comes every four years', () => {
    expect(iso(nextTicks(schedule('0 0 29 2 *'), new Date('2025-01-01T00:00:00Z'), 2))).toEqual([
      '2028-02-29T00:00:00.000Z',
      '2032-02-29T00:00:00.000Z',
    ]);
  });
});

describe('time zones', () => {
  it.each([['Mars/Olympus_Mons'], ['Europe/Pariss'], ['GMT+25']])(
    'refuses the unknown zone %s, naming it and saying what a zone looks like',
    (tz) => {
      expect(scheduleErrorOf({ name: 'n', cron: '@daily', task: 'report', tz }).message).toBe(
        `schedule "n": unknown time zone "${tz}": use an IANA zone name such as "Europe/Paris", "America/New_York" or "UTC" ` +
          `(Intl.supportedValuesOf('timeZone') lists them)`,
      );
    },
  );

  it.each([[''], [3], [['Europe/Paris']]])('refuses the zone %j, which is not a name', (tz) => {
    expect(scheduleErrorOf({ name: 'n', cron: '@daily', task: 'report', tz }).message).toMatch(
      /^schedule "n": tz must be an IANA time zone name/,
    );
  });

  it('compiles a schedule built by hand when first used, refusing its bad zone then', () => {
    const byHand: Schedule = { ...schedule('@daily'), tz: 'Nowhere/Town' };
    expect(() => cronOf(byHand)).toThrow(/unknown time zone "Nowhere\/Town"/);
  });
});

describe('parseSchedules', () => {
  it('parses each declaration', () => {
    const schedules = parseSchedules([
      { name: 'a', cron: '@daily', task: 'report' },
      { name: 'b', cron: '@hourly', task: 'report' },
    ]);
    expect(schedules.map((s) => s.name)).toEqual(['a', 'b']);
  });

  it('refuses two schedules with one name', () => {
    expect(() =>
      parseSchedules([
        { name: 'a', cron: '@daily', task: 'report' },
        { name: 'a', cron: '@hourly', task: 'other' },
      ]),
    ).toThrow('schedule "a": declared twice: schedule names must be unique');
  });

  it('refuses something that is not an array', () => {
    expect(() => parseSchedules({ name: 'a' })).toThrow(/schedules is an array/);
  });
});
