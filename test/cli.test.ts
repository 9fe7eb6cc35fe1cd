import { describe, expect, it } from 'vitest';
import { createClient } from '../supervisor/public.ts';
import { FIXTURE_TASKS, useTestSchema } from './helpers/db.ts';
import { CLI, run, start } from './helpers/process.ts';

const db = useTestSchema('cli');
const env = { DATABASE_URL: db.url, GRAPEVINE_LOG_LEVEL: 'warn' };
const cli = (...args: string[]) => run([CLI, ...args, '--schema', db.schema], env);

describe('grapevine CLI', () => {
  it('prints help for the command and for each subcommand', async () => {
    const main = await run([CLI, '--help']);
    expect(main.code).toBe(0);
    expect(main.stdout).toMatch(/Usage: grapevine <command>/);
    const add = await run([CLI, 'add', '--help']);
    expect(add.stdout).toMatch(/grapevine add TASK \[JSON\]/);
    const none = await run([CLI]);
    expect(none.code).toBe(2);
  });

  it('answers bad input with one line and a usage exit code', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['add', 'square', '{"n": '], /payload is not valid JSON/],
      [['add', 'square', '--frobnicate'], /unknown option --frobnicate for `grapevine add`/],
      [['fly'], /unknown command "fly"/],
      [['run'], /--tasks is required/],
      [['add', 'square', '--priority', 'high'], /--priority must be an integer/],
      [['run', '--tasks', FIXTURE_TASKS, '--idle-timeout', 'soon'], /--idle-timeout must be a number of seconds/],
      [['run', '--tasks', FIXTURE_TASKS, '--log-format', 'xml'], /--log-format must be pretty or json/],
      // A negative number after a flag is its value, refused for its range (not an "unknown option -1").
      [['run', '--tasks', FIXTURE_TASKS, '--threads', '-1'], /^grapevine: --threads must be an integer from 1 to 256, got -1\n/],
      [['run', '--tasks', FIXTURE_TASKS, '--threads=-1'], /--threads must be an integer from 1 to 256, got -1/],
      [['run', '--tasks', FIXTURE_TASKS, '--max-threads', '0'], /--max-threads must be an integer from 1 to 256, got 0/],
      [['run', '--tasks', FIXTURE_TASKS, '--grace-ms', '-5'], /--grace-ms must be an integer from 0 to/],
      // Over 2^31 - 1 ms, a timer fires at once: the wait would give up before it began.
      [['job', '1', '--follow', '--wait-ms', '3000000000'], /--wait-ms must be an integer from 0 to 2147483647, got 3000000000/],
      [['job', '1', '--follow', '--wait-ms', '-5'], /--wait-ms must be an integer from 0 to 2147483647, got -5/],
      [['add', 'square', '--wait', '--wait-ms', '3000000000'], /--wait-ms must be an integer from 0 to 2147483647/],
    ];
    for (const [args, message] of cases) {
      const result = await run([CLI, ...args], env);
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
      expect(result.stderr).toMatch(message);
    }
  });

  it('answers a value PostgreSQL cannot store with one line naming the field, and inserts nothing', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['add', 'square', '--priority', '-40000'], /priority must be an integer from -32768 to 32767, got -40000/],
      [['add', 'square', '--run-at', 'infinity'], /runAt of task "square" is not a valid time \("infinity"\)/],
      [['add', 'square', '--run-at', '+275001-01-01T00:00:00Z'], /runAt of task "square" is in the year 275001/],
      [['add', 'square', '{"s": "a\\u0000b"}'], /payload of task "square" holds a NUL character/],
    ];
    for (const [args, message] of cases) {
      const result = await cli(...args);
      expect(result.code, args.join(' ')).toBe(1);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
      expect(result.stderr).toMatch(message);
      expect(result.stderr).not.toMatch(/invalid input syntax|unsupported Unicode|out of range/);
    }
  });

  it('stops at once when given no database, naming DATABASE_URL, --database-url and --embedded', async () => {
    const noDatabase = { DATABASE_URL: undefined, GRAPEVINE_TEST_DATABASE_URL: undefined };
    const commands = [
      ['run', '--tasks', FIXTURE_TASKS],
      ['add', 'square'],
      ['job', '1'],
      ['cancel', '1'],
      ['migrate'],
      ['supervisors'],
      ['log'],
      ['jobs', '--state', 'failed'],
      ['stats'],
      ['retry', '--state', 'failed'],
      ['reschedule', '1', '--run-at', '2030-01-01T00:00:00Z'],
      ['purge', '--state', 'succeeded'],
      ['cancel', '1', '2'],
      ['message', 'PING'],
    ];
    for (const args of commands) {
      const result = await run([CLI, ...args], noDatabase);
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stdout).toBe('');
      expect(result.stderr).toBe(
        'grapevine: no database given: set DATABASE_URL or pass --database-url URL, or pass --embedded to run a local PostgreSQL kept in ./.grapevine/db\n',
      );
    }
    const both = await run([CLI, 'migrate', '--embedded', '--database-url', db.url], noDatabase);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/--embedded and --database-url name two databases/);
  });

  it('names the unreachable host and never prints the password', async () => {
    const secret = 'hunter2-secret';
    const viaEnv = await run([CLI, 'job', '1'], { DATABASE_URL: `postgres://app:${secret}@127.0.0.1:1/jobs` });
    expect(viaEnv.code).toBe(1);
    expect(viaEnv.stderr).toMatch(/cannot connect to PostgreSQL at app@127\.0\.0\.1:1\/jobs/);
    const viaFlag = await run([CLI, 'add', 'square', '--database-url', `postgres://app:${secret}@nonexistent.invalid:5432/jobs`]);
    expect(viaFlag.code).toBe(1);
    expect(viaFlag.stderr).toMatch(/nonexistent\.invalid:5432/);
    for (const r of [viaEnv, viaFlag]) expect(r.stdout + r.stderr).not.toContain(secret);
  });

  it('rejects a schema name that is not a plain identifier before running SQL', async () => {
    const result = await run([CLI, 'migrate', '--schema', 'x"; DROP TABLE jobs;--'], env);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/invalid schema name/);
  });

  it('run --idle-timeout exits 0 by itself once no job has run for that long', async () => {
    const supervisor = start(
      [CLI, 'run', '--tasks', FIXTURE_TASKS, '--threads', '1', '--idle-timeout', '0.3', '--schema', db.schema, '--log-level', 'info'],
      env,
    );
    const exit = await supervisor.exited;
    expect(exit.code).toBe(0);
    expect(exit.stdout).toMatch(/TIMEOUT no job for/);
    expect(exit.stdout).toMatch(/stopped/);
  });

  it('run logs pino JSON when stdout is not a terminal, and readable lines with --log-format pretty', async () => {
    const args = [
      CLI,
      'run',
      '--tasks',
      FIXTURE_TASKS,
      '--threads',
      '1',
      '--idle-timeout',
      '0.3',
      '--schema',
      db.schema,
      '--log-level',
      'info',
    ];
    const json = await run(args, env);
    expect(json.code).toBe(0);
    for (const line of json.stdout.trim().split('\n')) expect(JSON.parse(line)).toHaveProperty('msg');
    const pretty = await run([...args, '--log-format', 'pretty'], env);
    expect(pretty.code).toBe(0);
    expect(pretty.stdout).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO {2}supervisor started supervisor=\S+ threads=1 /m);
    expect(pretty.stdout).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO {2}THREAD_EXIT stopped /m);
    expect(pretty.stdout).not.toMatch(/"level"/);
  });

  it('migrates, adds a job, shows it, and runs it with --wait against a running supervisor', async () => {
    const migrated = await cli('migrate');
    expect(migrated.code).toBe(0);
    expect(migrated.stdout).toMatch(/version \d+/);

    const added = await cli('add', 'square', '{"n": 16}', '--priority', '3');
    expect(added.code).toBe(0);
    const id = added.stdout.trim();
    const shown = await cli('job', id);
    expect(JSON.parse(shown.stdout)).toMatchObject({ id, task: 'square', state: 'pending', priority: 3, payload: { n: 16 } });

    const supervisor = start([CLI, 'run', '--tasks', FIXTURE_TASKS, '--threads', '2', '--schema', db.schema, '--log-level', 'info'], env);
    try {
      await supervisor.waitFor(/supervisor started/);
      const waited = await cli('add', 'square', '{"n": 81}', '--wait');
      expect(waited.code).toBe(0);
      expect(JSON.parse(waited.stdout)).toMatchObject({ state: 'succeeded', result: { n: 81, root: 9 } });
      const client = createClient({ connectionString: db.url, schema: db.schema });
      expect((await client.waitForJob(id)).state).toBe('succeeded');
      await client.close();

      const failed = await cli('add', 'fail', '{"message": "nope"}', '--max-attempts', '1', '--wait');
      expect(failed.code).toBe(1);
      expect(JSON.parse(failed.stdout)).toMatchObject({ state: 'failed' });
    } finally {
      supervisor.child.kill('SIGTERM');
    }
    const exit = await supervisor.exited;
    expect(exit.code).toBe(0);
    expect(exit.stdout).toMatch(/stopped/);
  });

  it('cancels a pending job', async () => {
    const added = await cli('add', 'square', '{}', '--run-at', new Date(Date.now() + 3_600_000).toISOString());
    const id = added.stdout.trim();
    const cancelled = await cli('cancel', id);
    expect(cancelled.stdout.trim()).toBe('cancelled');
    const { rows } = await db.pool.query(`SELECT state FROM "${db.schema}".jobs WHERE id = $1`, [id]);
    expect(rows[0].state).toBe('cancelled');
  });

  it('job ID prints a stored error with its control characters escaped, as JSON that still reads back the same', async () => {
    const added = await cli('add', 'square', '{}', '--run-at', new Date(Date.now() + 3_600_000).toISOString());
    const id = added.stdout.trim();
    const error = 'boom \u001b[2J\u009b31m\u202etxt.exe';
    await db.pool.query(`UPDATE "${db.schema}".jobs SET last_error = $2 WHERE id = $1`, [id, error]);
    const shown = await cli('job', id);
    expect(shown.code).toBe(0);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: the escape sequence must not reach the terminal
    expect(shown.stdout).not.toMatch(/[\u001b\u009b\u202e]/);
    expect(JSON.parse(shown.stdout).lastError).toBe(error);
  });
});
