import { describe, expect, it } from 'vitest';
import { GrapevineError } from '../../src/errors.ts';
import { parseCrontab } from '../../src/schedule/crontab.ts';

function crontabError(text: string, fileName = 'jobs.cron'): GrapevineError {
  try {
    parseCrontab(text, fileName);
  } catch (err) {
    expect(err).toBeInstanceOf(GrapevineError);
    expect((err as GrapevineError).code).toBe('GRAPEVINE_SCHEDULE_INVALID');
    return err as GrapevineError;
  }
  throw new Error(`parseCrontab accepted ${JSON.stringify(text)}`);
}

describe('parseCrontab', () => {
  it('reads one schedule per line, skipping comments and blank lines, with CRLF line ends too', () => {
    const text = [
      '# nightly work',
      '',
      '30 2 * * * nightly-report',
      '   # an indented comment',
      '0 */15 * * * * poll-feeds {"feeds": ["a", "b"]}',
      '@hourly cleanup --tz=Europe/Paris --queue=maintenance --priority=-3 --max-attempts=2 --missed=backfill:3',
      '\t',
    ].join('\r\n');
    expect(parseCrontab(text, 'jobs.cron')).toEqual([
      {
        name: 'nightly-report',
        cron: '30 2 * * *',
        task: 'nightly-report',
        payload: {},
        tz: 'UTC',
        queue: 'default',
        priority: 0,
        maxAttempts: null,
        missed: 'skip',
      },
      {
        name: 'poll-feeds',
        cron: '0 */15 * * * *',
        task: 'poll-feeds',
        payload: { feeds: ['a', 'b'] },
        tz: 'UTC',
        queue: 'default',
        priority: 0,
        maxAttempts: null,
        missed: 'skip',
      },
      {
        name: 'cleanup',
        cron: '@hourly',
        task: 'cleanup',
        payload: {},
        tz: 'Europe/Paris',
        queue: 'maintenance',
        priority: -3,
        maxAttempts: 2,
        missed: { backfill: 3 },
      },
    ]);
  });

  it('returns no schedules for a file of comments', () => {
    expect(parseCrontab('# nothing yet\n\n', 'jobs.cron')).toEqual([]);
  });

  it('takes options before the payload, after it, or both; names a schedule with --name', () => {
    const [a, b, c] = parseCrontab(
      [
        '0 2 * * * report --name=a --tz=America/New_York {"full": true}',
        '0 3 * * * report {"full": false} --name=b --missed=once',
        '0 4 * * * report --name=c [1, 2] --queue=q',
      ].join('\n'),
      'jobs.cron',
    );
    expect(a).toMatchObject({ name: 'a', task: 'report', tz: 'America/New_York', payload: { full: true } });
    expect(b).toMatchObject({ name: 'b', task: 'report', payload: { full: false }, missed: 'once' });
    expect(c).toMatchObject({ name: 'c', queue: 'q', payload: [1, 2] });
  });

  it('reads a payload whose strings hold spaces, brackets, quotes and text that looks like an option', () => {
    const [s] = parseCrontab('@daily report {"note": "a } b ] \\" --tz=Mars/X", "list": [{"x": "{"}]} --tz=UTC', 'jobs.cron');
    expect(s.payload).toEqual({ note: 'a } b ] " --tz=Mars/X', list: [{ x: '{' }] });
    expect(s.tz).toBe('UTC');
  });

  it('reads a payload that is a string, a number, or null', () => {
    const schedules = parseCrontab('@daily a "two words" --name=s\n@daily a -12.5 --name=n\n@daily a null --name=z', 'jobs.cron');
    expect(schedules.map((s) => s.payload)).toEqual(['two words', -12.5, {}]);
  });

  describe('five fields or six', () => {
    it.each([
      ['30 2 * * * report', '30 2 * * *', 'report'],
      ['0 30 2 * * * report', '0 30 2 * * *', 'report'],
      ['30 2 * * 1-5 report', '30 2 * * 1-5', 'report'],
      ['30 2 * * * MON report', '30 2 * * * MON', 'report'],
      ['0 0 2 * * * mon', '0 0 2 * * *', 'mon'],
      ['30 2 * * * sunday-report', '30 2 * * *', 'sunday-report'],
      ['30 2 * * * 5th-report', '30 2 * * *', '5th-report'],
      ['0 0 12 * * FRI#2 report', '0 0 12 * * FRI#2', 'report'],
    ])('reads %j as the expression %j and the task %j', (line, cron, task) => {
      expect(parseCrontab(line, 'jobs.cron')[0]).toMatchObject({ cron, task });
    });

    it('after five fields, a sixth that reads as a day of week is a field, so a task named like one needs six fields', () => {
      expect(crontabError('\n30 2 * * * 5').message).toBe(
        'jobs.cron:2: no task after the cron expression "30 2 * * * 5" (after five fields, "5" reads as a day-of-week field, ' +
          'which makes a six-field expression with seconds first; a task named so goes after six fields: "0 30 2 * * * 5")',
      );
      expect(parseCrontab('0 30 2 * * * 5', 'jobs.cron')[0]).toMatchObject({ cron: '0 30 2 * * *', task: '5' });
    });
  });

  describe('errors name the file, the line and the problem', () => {
    it.each([
      [
        'a bad expression',
        '0 0 32 * * report',
        'jobs.cron:3: schedule "report": invalid cron "0 0 32 * *": the day-of-month field "32" is invalid: use 1-31',
      ],
      [
        'an unknown zone',
        '@daily report --tz=Europe/Pariss',
        'jobs.cron:3: schedule "report": unknown time zone "Europe/Pariss": use an IANA zone name',
      ],
      ['an unknown shorthand', '@often report', 'jobs.cron:3: schedule "report": unknown cron shorthand "@often"'],
      ['an expression cut short', '30 2 *', 'jobs.cron:3: the cron expression "30 2 *" has 3 of its 5 fields, and no task follows'],
      ['a missing task', '30 2 * * *', 'jobs.cron:3: no task after the cron expression "30 2 * * *"'],
      ['a missing task after a shorthand', '@daily', 'jobs.cron:3: no task after the cron expression "@daily"'],
      [
        'an option before the task',
        '@daily --tz=UTC report',
        'jobs.cron:3: the task comes before any option: write "@daily" TASK --tz=UTC',
      ],
      [
        'an unknown option',
        '@daily report --zone=UTC',
        'jobs.cron:3: unknown option "--zone=UTC": the options are --name, --tz, --queue, --priority, --max-attempts, --missed',
      ],
      ['an option of Object.prototype', '@daily report --constructor=x', 'jobs.cron:3: unknown option "--constructor=x"'],
      ['an option without a value', '@daily report --tz', 'jobs.cron:3: option --tz has no value: write --tz=VALUE, without spaces'],
      ['an option given twice', '@daily report --tz=UTC --tz=Europe/Paris', 'jobs.cron:3: option --tz is given twice'],
      [
        'a bad missed policy',
        '@daily report --missed=backfill',
        'jobs.cron:3: --missed=backfill is not a policy: write --missed=skip, --missed=once or --missed=backfill:N with N from 1 to 1000',
      ],
      [
        'a backfill too large',
        '@daily report --missed=backfill:5000',
        "jobs.cron:3: schedule \"report\": missed must be 'skip', 'once' or { backfill: N } with N from 1 to 1000",
      ],
      ['a priority that is not a number', '@daily report --priority=high', 'jobs.cron:3: --priority=high is not a whole number'],
      [
        'a priority out of range',
        '@daily report --priority=40000',
        'jobs.cron:3: schedule "report": priority must be an integer from -32768 to 32767, got 40000',
      ],
      ['a payload that is not JSON', "@daily report {'full': true}", "jobs.cron:3: the payload {'full': true} is not JSON ("],
      ['an unclosed payload', '@daily report {"full": true', 'jobs.cron:3: the payload {"full": true is not JSON ('],
      ['a bare word where the payload would be', '@daily report Europe/Paris', 'jobs.cron:3: the payload Europe/Paris is not JSON ('],
      [
        'two payloads',
        '@daily report {"a": 1} {"b": 2}',
        'jobs.cron:3: unexpected "{\\"b\\":" after the payload: options are written --OPTION=VALUE, and a line has one JSON payload',
      ],
      [
        'text glued to the payload',
        '@daily report {"a": 1}--tz=UTC',
        'jobs.cron:3: unexpected "--tz=UTC" right after the payload {"a": 1}: put a space between the payload and an option',
      ],
      ['a bad task name', '@daily rep@rt', 'jobs.cron:3: schedule "rep@rt": invalid task name "rep@rt": use 1-128 characters'],
      ['a bad schedule name', '@daily report --name=a|b', 'jobs.cron:3: schedule: invalid name "a|b"'],
    ])('%s', (_what, line, message) => {
      expect(crontabError(`# header\n\n${line}\n`).message).toContain(message);
    });

    it('a name used twice, naming both lines', () => {
      expect(crontabError('@daily report\n# other\n@hourly report').message).toBe(
        'jobs.cron:3: the schedule name "report" is already used on line 1: give one of them --name=OTHER',
      );
    });

    it('every bad line of the file in one error, so one start shows them all', () => {
      const err = crontabError('@daily ok\n0 0 32 * * a\n@daily b --tz=Nowhere\n@daily c', '/etc/grapevine/jobs.cron');
      const lines = err.message.split('\n');
      expect(lines[0]).toBe('2 bad lines in crontab /etc/grapevine/jobs.cron:');
      expect(lines[1]).toMatch(/^\/etc\/grapevine\/jobs\.cron:2: schedule "a": invalid cron "0 0 32 \* \*"/);
      expect(lines[2]).toMatch(/^\/etc\/grapevine\/jobs\.cron:3: schedule "b": unknown time zone "Nowhere"/);
      expect(lines).toHaveLength(3);
    });
  });
});
