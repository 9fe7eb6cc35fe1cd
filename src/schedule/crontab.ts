import { GrapevineError } from '../errors.ts';
import { isDayOfWeekField, MAX_BACKFILL, parseSchedule, type MissedTicks, type Schedule, type ScheduleSpec } from './schedule.ts';

/**
 * Per-line options of a crontab file, `--option=value`, and the schedule
 * field each one sets.
 */
const OPTIONS: Record<string, (spec: ScheduleSpec, value: string) => void> = {
  name: (spec, value) => (spec.name = value),
  tz: (spec, value) => (spec.tz = value),
  queue: (spec, value) => (spec.queue = value),
  priority: (spec, value) => (spec.priority = integerOption('priority', value)),
  'max-attempts': (spec, value) => (spec.maxAttempts = integerOption('max-attempts', value)),
  missed: (spec, value) => (spec.missed = missedOption(value)),
};

/**
 * The schedules of a crontab file (`grapevine run --crontab FILE`), one per line:
 *
 *     <cron expression> <task> [--option=value ...] [JSON payload] [--option=value ...]
 *
 * - The expression is a shorthand (`@daily`), or 5 fields, or 6 fields with
 *   seconds first. After five fields, a sixth token that reads as a
 *   day-of-week field (`5`, `1-5`, `MON`, `*`) makes the expression six
 *   fields; anything else is the task. A task named like a day of week
 *   (`mon`) is written after a six-field expression (`0 30 2 * * * mon`).
 * - Options: --name (default: the task), --tz, --queue, --priority,
 *   --max-attempts, --missed=skip|once|backfill:N. Values have no spaces.
 * - The payload is one JSON value; it may contain spaces.
 * - A line whose first non-blank character is `#` is a comment, as is a
 *   blank line; `#` later in a line is not a comment (`FRI#2` is a field).
 *
 * Throws one GRAPEVINE_SCHEDULE_INVALID listing every bad line as
 * `FILE:LINE: problem`, so that one start shows them all.
 */
export function parseCrontab(text: string, fileName: string): Schedule[] {
  const schedules: Schedule[] = [];
  const problems: string[] = [];
  const lineOfName = new Map<string, number>();
  text.split(/\r?\n/).forEach((raw, index) => {
    const lineNumber = index + 1;
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    try {
      const schedule = parseSchedule(parseLine(line));
      const earlier = lineOfName.get(schedule.name);
      if (earlier !== undefined) {
        throw new Error(
          `the schedule name ${JSON.stringify(schedule.name)} is already used on line ${earlier}: give one of them --name=OTHER`,
        );
      }
      lineOfName.set(schedule.name, lineNumber);
      schedules.push(schedule);
    } catch (err) {
      problems.push(`${fileName}:${lineNumber}: ${(err as Error).message}`);
    }
  });
  if (problems.length === 1) throw new GrapevineError('GRAPEVINE_SCHEDULE_INVALID', problems[0]);
  if (problems.length > 1)
    throw new GrapevineError('GRAPEVINE_SCHEDULE_INVALID', `${problems.length} bad lines in crontab ${fileName}:\n${problems.join('\n')}`);
  return schedules;
}

/** One non-comment line as a schedule declaration, or an Error saying what is wrong with it. */
function parseLine(line: string): ScheduleSpec {
  const scanner = new LineScanner(line);
  const cron = readCron(scanner);
  const task = scanner.word();
  if (task === undefined) throw new Error(`no task after the cron expression ${JSON.stringify(cron)}${sixthFieldHint(cron)}`);
  if (task.startsWith('--')) throw new Error(`the task comes before any option: write ${JSON.stringify(cron)} TASK ${task}`);
  const spec: ScheduleSpec = { name: task, cron, task };
  const given = new Set<string>();
  let payloadSeen = false;
  while (!scanner.done()) {
    if (scanner.peek().startsWith('--')) {
      const option = scanner.word()!;
      const [, key, value] = /^--([^=]*)(?:=(.*))?$/.exec(option)!;
      const setter = Object.hasOwn(OPTIONS, key) ? OPTIONS[key] : undefined;
      if (!setter)
        throw new Error(
          `unknown option ${JSON.stringify(option)}: the options are ${Object.keys(OPTIONS)
            .map((o) => `--${o}`)
            .join(', ')}`,
        );
      if (!value) throw new Error(`option --${key} has no value: write --${key}=VALUE, without spaces`);
      if (given.has(key)) throw new Error(`option --${key} is given twice`);
      given.add(key);
      setter(spec, value);
    } else if (payloadSeen) {
      throw new Error(
        `unexpected ${JSON.stringify(scanner.word())} after the payload: options are written --OPTION=VALUE, and a line has one JSON payload`,
      );
    } else {
      spec.payload = scanner.json();
      payloadSeen = true;
    }
  }
  return spec;
}

function readCron(scanner: LineScanner): string {
  const first = scanner.word()!;
  if (first.startsWith('@')) return first;
  const fields = [first];
  while (fields.length < 5) {
    const field = scanner.word();
    if (field === undefined)
      throw new Error(`the cron expression ${JSON.stringify(fields.join(' '))} has ${fields.length} of its 5 fields, and no task follows`);
    fields.push(field);
  }
  if (!scanner.done() && isDayOfWeekField(scanner.peek())) fields.push(scanner.word()!);
  return fields.join(' ');
}

function sixthFieldHint(cron: string): string {
  const fields = cron.split(' ');
  if (fields.length !== 6) return '';
  return ` (after five fields, ${JSON.stringify(fields[5])} reads as a day-of-week field, which makes a six-field expression with seconds first; a task named so goes after six fields: "0 ${fields.slice(0, 5).join(' ')} ${fields[5]}")`;
}

function integerOption(option: string, value: string): number {
  if (!/^-?\d+$/.test(value)) throw new Error(`--${option}=${value} is not a whole number`);
  return Number(value);
}

/** A missed-tick policy as written after `--missed=`: skip, once or backfill:N. */
export function missedOption(value: string): MissedTicks {
  if (value === 'skip' || value === 'once') return value;
  const match = /^backfill:(\d+)$/.exec(value);
  if (match) return { backfill: Number(match[1]) };
  throw new Error(
    `--missed=${value} is not a policy: write --missed=skip, --missed=once or --missed=backfill:N with N from 1 to ${MAX_BACKFILL}`,
  );
}

/** Reads a line word by word, or one JSON value at a time (which may hold spaces). */
class LineScanner {
  private readonly line: string;
  private at = 0;

  constructor(line: string) {
    this.line = line;
    this.skipSpaces();
  }

  done(): boolean {
    return this.at >= this.line.length;
  }

  peek(): string {
    return /^\S*/.exec(this.line.slice(this.at))![0];
  }

  word(): string | undefined {
    if (this.done()) return undefined;
    const word = this.peek();
    this.at += word.length;
    this.skipSpaces();
    return word;
  }

  /** One JSON value: an object, array or string up to its closing bracket or quote, anything else up to the next space. */
  json(): unknown {
    const start = this.at;
    const end = jsonEnd(this.line, start);
    const text = this.line.slice(start, end);
    this.at = end;
    if (!this.done() && !/\s/.test(this.line[this.at])) {
      throw new Error(
        `unexpected ${JSON.stringify(this.peek())} right after the payload ${text}: put a space between the payload and an option`,
      );
    }
    this.skipSpaces();
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new Error(
        `the payload ${text} is not JSON (${(err as Error).message}): write one JSON value, for example {"full":true}, or an option as --OPTION=VALUE`,
      );
    }
  }

  private skipSpaces(): void {
    while (!this.done() && /\s/.test(this.line[this.at])) this.at++;
  }
}

/** Where the JSON value starting at `start` ends; an unclosed one runs to the end of the line (JSON.parse then says what is wrong). */
function jsonEnd(line: string, start: number): number {
  const first = line[start];
  if (first === '"') return stringEnd(line, start);
  if (first !== '{' && first !== '[') return start + /^\S*/.exec(line.slice(start))![0].length;
  let depth = 0;
  for (let i = start; i < line.length; i++) {
    const char = line[i];
    if (char === '"') i = stringEnd(line, i) - 1;
    else if (char === '{' || char === '[') depth++;
    else if ((char === '}' || char === ']') && --depth === 0) return i + 1;
  }
  return line.length;
}

function stringEnd(line: string, quote: number): number {
  for (let i = quote + 1; i < line.length; i++) {
    if (line[i] === '\\') i++;
    else if (line[i] === '"') return i + 1;
  }
  return line.length;
}
