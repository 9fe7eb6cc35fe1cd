import { Cron } from 'croner';
import { DEFAULTS, validateName, validateInt } from '../config.ts';
import { GrapevineError } from '../errors.ts';

/**
 * What happens to the ticks a schedule missed while no supervisor was there
 * to fire them: `skip` them, run the most recent one `once`, or `backfill`
 * up to N of the most recent ones, oldest first.
 */
export type MissedTicks = 'skip' | 'once' | { backfill: number };

/** A recurring schedule as written in code, in a crontab line or on the command line. */
export interface ScheduleSpec {
  /** Unique per database: the schedule's identity, and half of each tick's identity. */
  name: string;
  /** 5 fields (minute first), 6 fields (second first), or a shorthand such as `@daily`. */
  cron: string;
  task: string;
  /** JSON given to every job the schedule adds (default `{}`). */
  payload?: unknown;
  /** IANA time zone the expression is read in (default `UTC`). */
  tz?: string;
  queue?: string;
  priority?: number;
  /** Not given (or null): its jobs take their task's retry policy, else 5. */
  maxAttempts?: number | null;
  /** Default `skip`. */
  missed?: MissedTicks;
}

/** A validated schedule: every field present, the zone in its canonical spelling. */
export interface Schedule {
  readonly name: string;
  readonly cron: string;
  readonly task: string;
  readonly payload: unknown;
  readonly tz: string;
  readonly queue: string;
  readonly priority: number;
  /** Null: not given, so the jobs take their task's retry policy (else 5). */
  readonly maxAttempts: number | null;
  readonly missed: MissedTicks;
}

const SHORTHANDS = ['@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly'] as const;

/** The most ticks a backfill policy may add at once: bounds the work of a start after long downtime. */
export const MAX_BACKFILL = 1_000;

const SPEC_FIELDS = ['name', 'cron', 'task', 'payload', 'tz', 'queue', 'priority', 'maxAttempts', 'missed'];
const SCHEDULE_NAME = /^[A-Za-z0-9_.:\-/]{1,128}$/;
const FIELD_NAMES_5 = ['minute', 'hour', 'day-of-month', 'month', 'day-of-week'];
const FIELD_NAMES_6 = ['second', ...FIELD_NAMES_5];
const FIELD_RANGES: Record<string, string> = {
  second: '0-59',
  minute: '0-59',
  hour: '0-23',
  'day-of-month': '1-31',
  month: '1-12 or JAN-DEC',
  'day-of-week': '0-7 (0 and 7 are Sunday) or SUN-SAT',
};

/**
 * Options for every expression. A time written without `*` or a step
 * (`30 2 * * *`, `0 1,13 * * *`) is a wall-clock time: on a spring-forward
 * day it runs when the skipped hour ends, and on a fall-back day it runs once,
 * as Vixie cron does. An expression with `*` or a step is an interval, which
 * keeps its pace in real time: it skips the missing hour and runs in both
 * copies of the repeated one.
 */
const CRON_OPTIONS = { paused: true, mode: '5-or-6-parts', fixedTimeRule: 'no-wildcard' } as const;

const compiled = new WeakMap<Schedule, Cron>();

function scheduleError(name: unknown, detail: string): GrapevineError {
  const who = typeof name === 'string' && name !== '' ? `schedule ${JSON.stringify(name)}` : 'schedule';
  return new GrapevineError('GRAPEVINE_SCHEDULE_INVALID', `${who}: ${detail}`);
}

/** Validates a schedule declaration, or throws GRAPEVINE_SCHEDULE_INVALID naming the field, the value and the fix. */
export function parseSchedule(spec: unknown): Schedule {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
    throw scheduleError(undefined, `a schedule is an object { name, cron, task, ... }, got ${describe(spec)}`);
  }
  const given = spec as Record<string, unknown>;
  const name = given.name;
  // The task first: a crontab line names its schedule after its task, whose own rules are the ones to quote.
  const task = rewrap(name, () => validateName('task', given.task));
  if (typeof name !== 'string' || !SCHEDULE_NAME.test(name)) {
    throw scheduleError(undefined, `invalid name ${describe(name)}: use 1-128 characters of letters, digits and _ . : - /`);
  }
  const unknown = Object.keys(given).filter((key) => !SPEC_FIELDS.includes(key));
  if (unknown.length > 0) {
    throw scheduleError(name, `unknown field ${JSON.stringify(unknown[0])}: the fields are ${SPEC_FIELDS.join(', ')}`);
  }
  const tz = canonicalZone(name, given.tz ?? 'UTC');
  const cron = normalizeCron(name, given.cron);
  const schedule: Schedule = Object.freeze({
    name,
    cron,
    task,
    payload: jsonPayload(name, given.payload ?? {}),
    tz,
    queue: rewrap(name, () => validateName('queue', given.queue ?? DEFAULTS.queue)),
    priority: rewrap(name, () => validateInt('priority', given.priority ?? 0, { min: -32768, max: 32767 })),
    maxAttempts:
      given.maxAttempts === undefined || given.maxAttempts === null
        ? null
        : rewrap(name, () => validateInt('maxAttempts', given.maxAttempts, { min: 1, max: 1000 })),
    missed: missedPolicy(name, given.missed ?? 'skip'),
  });
  compiled.set(schedule, compileCron(name, cron, tz));
  return schedule;
}

/** Validates a list of declarations whose names must differ. */
export function parseSchedules(specs: unknown): Schedule[] {
  if (!Array.isArray(specs)) throw scheduleError(undefined, `schedules is an array of { name, cron, task, ... }, got ${describe(specs)}`);
  const schedules = specs.map(parseSchedule);
  const seen = new Set<string>();
  for (const { name } of schedules) {
    if (seen.has(name)) throw scheduleError(name, 'declared twice: schedule names must be unique');
    seen.add(name);
  }
  return schedules;
}

/** The compiled expression of a schedule; compiles (and validates) one built by hand. */
export function cronOf(schedule: Schedule): Cron {
  let cron = compiled.get(schedule);
  if (!cron) {
    cron = compileCron(schedule.name, schedule.cron, canonicalZone(schedule.name, schedule.tz));
    compiled.set(schedule, cron);
  }
  return cron;
}

/**
 * True when `token` is a valid day-of-week field: how a crontab line tells
 * the sixth field of a seconds-first expression from a task name.
 */
export function isDayOfWeekField(token: string): boolean {
  try {
    new Cron(`* * * * * ${token}`, { ...CRON_OPTIONS, timezone: 'UTC' });
    return true;
  } catch {
    return false;
  }
}

function normalizeCron(name: string, cron: unknown): string {
  if (typeof cron !== 'string' || cron.trim() === '') {
    throw scheduleError(name, `cron must be a cron expression such as "30 2 * * *" or "@daily", got ${describe(cron)}`);
  }
  const fields = cron.trim().split(/\s+/);
  if (fields[0].startsWith('@')) {
    const shorthand = fields[0].toLowerCase();
    if (fields.length > 1 || !(SHORTHANDS as readonly string[]).includes(shorthand)) {
      throw scheduleError(name, `unknown cron shorthand ${JSON.stringify(cron.trim())}: use one of ${SHORTHANDS.join(', ')}`);
    }
    return shorthand;
  }
  if (fields.length !== 5 && fields.length !== 6) {
    throw scheduleError(
      name,
      `cron ${JSON.stringify(cron.trim())} has ${fields.length} field${fields.length === 1 ? '' : 's'}: write 5 (${FIELD_NAMES_5.join(' ')}), ` +
        `6 (second first) or a shorthand such as @daily`,
    );
  }
  return fields.join(' ');
}

function compileCron(name: string, cron: string, tz: string): Cron {
  let compiledCron: Cron;
  try {
    compiledCron = new Cron(cron, { ...CRON_OPTIONS, timezone: tz });
  } catch (err) {
    throw scheduleError(name, `invalid cron ${JSON.stringify(cron)}: ${explainCronError(cron, err)}`);
  }
  // An expression can be valid field by field and still name no date (30 2 30 2 *: February 30th).
  if (compiledCron.nextRun(new Date(0)) === null) {
    throw scheduleError(name, `cron ${JSON.stringify(cron)} never fires: no date matches its day-of-month, month and day-of-week together`);
  }
  return compiledCron;
}

/**
 * Which field is wrong, found by trying each field alone with `*` in the
 * others. The library's reason is kept, less its own field numbering, unless
 * it is a bare range complaint, whose number it reports zero-based for days
 * and months: the allowed range says more.
 */
function explainCronError(cron: string, err: unknown): string {
  const reason = String((err as Error)?.message ?? err).replace(/^CronPattern:\s*/, '');
  const fields = cron.split(' ');
  const names = fields.length === 6 ? FIELD_NAMES_6 : FIELD_NAMES_5;
  for (let i = 0; i < fields.length; i++) {
    const alone = fields.map((field, j) => (j === i ? field : '*')).join(' ');
    try {
      new Cron(alone, { ...CRON_OPTIONS, timezone: 'UTC' });
    } catch (fieldErr) {
      const fieldReason = String((fieldErr as Error)?.message ?? fieldErr)
        .replace(/^CronPattern:\s*/, '')
        .replace(/^configuration entry \d+ \(.*?\) /, '')
        .replace(/\.$/, '');
      const detail = /^Invalid value for/.test(fieldReason) ? '' : ` (${fieldReason})`;
      return `the ${names[i]} field ${JSON.stringify(fields[i])} is invalid${detail}: use ${FIELD_RANGES[names[i]]}, *, a range a-b, a step */n or a list a,b`;
    }
  }
  return reason;
}

function canonicalZone(name: string, tz: unknown): string {
  if (typeof tz !== 'string' || tz === '') {
    throw scheduleError(name, `tz must be an IANA time zone name such as "Europe/Paris" or "UTC", got ${describe(tz)}`);
  }
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: tz }).resolvedOptions().timeZone;
  } catch {
    throw scheduleError(
      name,
      `unknown time zone ${JSON.stringify(tz)}: use an IANA zone name such as "Europe/Paris", "America/New_York" or "UTC" ` +
        `(Intl.supportedValuesOf('timeZone') lists them)`,
    );
  }
}

function missedPolicy(name: string, missed: unknown): MissedTicks {
  if (missed === 'skip' || missed === 'once') return missed;
  if (typeof missed === 'object' && missed !== null && Object.keys(missed).length === 1) {
    const backfill = (missed as { backfill?: unknown }).backfill;
    if (typeof backfill === 'number' && Number.isInteger(backfill) && backfill >= 1 && backfill <= MAX_BACKFILL) return { backfill };
  }
  throw scheduleError(name, `missed must be 'skip', 'once' or { backfill: N } with N from 1 to ${MAX_BACKFILL}, got ${describe(missed)}`);
}

function jsonPayload(name: string, payload: unknown): unknown {
  let json: string | undefined;
  try {
    json = JSON.stringify(payload);
  } catch (err) {
    throw scheduleError(
      name,
      `payload is not JSON-serializable (${(err as Error).message}): pass plain objects, arrays, strings, numbers and booleans`,
    );
  }
  if (json === undefined) throw scheduleError(name, `payload is not JSON (got ${typeof payload})`);
  return JSON.parse(json);
}

/** Runs one of the shared config validators, giving its message the schedule's name and this error's code. */
function rewrap<T>(name: unknown, check: () => T): T {
  try {
    return check();
  } catch (err) {
    if (err instanceof GrapevineError) throw scheduleError(name, err.message);
    throw err;
  }
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
