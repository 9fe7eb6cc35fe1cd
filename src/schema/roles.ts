import type pg from 'pg';
import { DEFAULTS, resolveConnectionString, validateSchemaName } from '../config.ts';
import { createPool, explainConnectionErrors, withTransaction } from '../db.ts';
import { configError, GrapevineError } from '../errors.ts';
import { quoteIdent } from './channels.ts';
import { migrate } from './migrate.ts';

/**
 * The three kinds of role a schema's owner hands out (`grapevine grant`),
 * each with what its part of grapevine runs and nothing more. None may
 * change the schema's shape: they run against a schema that is current, and
 * migrate() then only reads (an owner runs `grapevine migrate`).
 *
 * - enqueuer: adds jobs and follows them through the security-definer
 *   functions add_job(), add_jobs(), get_job(), watch_job() and
 *   watch_progress(); no right on
 *   any table, so it cannot write a job's state, lease or result.
 * - worker: runs supervisors: claims, outcome writes, leases, the reaper and
 *   pruning, the registry and heartbeat, control messages and the log.
 * - operator: sends control messages and reads their responses, reads the
 *   registry and the log, follows the log, cancels jobs (cancel_job()),
 *   manages schedules; reads the jobs table and acts on jobs (grapevine
 *   jobs, stats, retry, reschedule, purge, cancel; the dashboard) through
 *   OPERATE_FUNCTIONS, with no right to write a row directly.
 */
export const ROLE_KINDS = ['enqueuer', 'worker', 'operator'] as const;
export type RoleKind = (typeof ROLE_KINDS)[number];

/** Every kind reads these: migrate()'s is-it-current check, and the payload limit clients read. */
const READ_BY_ALL = ['migrations', 'schema_functions', 'settings'];

const ENQUEUE_FUNCTIONS = [
  'add_job(text, jsonb, text, timestamptz, integer, integer, integer, text, text, interval, bigint[], text, text)',
  'add_jobs(jsonb)',
  'get_job(bigint)',
  'watch_job(bigint)',
  'watch_progress(bigint, integer)',
];

/**
 * The invoker's-rights functions the supervisor and threads call. PUBLIC may
 * execute them unless a DBA revoked it; granted by name all the same, so the
 * list says what a worker runs.
 */
const WORKER_FUNCTIONS = [
  'claim_next(integer, text[], text[], text, integer, integer)',
  'claim_ids(bigint[], text[], text[], text, integer, integer)',
  'has_due(text[], text[], boolean)',
  // Called by the claims and has_due() for queues with limits (docs/limits.md).
  'held_queues()',
  'pending_queues()',
  'limited_candidates(text, integer, integer, integer, text[], integer, timestamptz)',
  'claim_limited(text, integer, text[], text, integer, integer)',
  'limited_due(text, text[])',
  'prune_finished(bigint, integer)',
  'unhandled_tasks(integer, integer)',
  'notify(text, text)',
  'notify_ids(text, bigint[])',
  'notify_ids_always(text, bigint[])',
  // helpers.dependencies() in handlers; outcome writes wake dependents.
  'dependencies_of(bigint)',
  'resolve_dependencies(bigint[], text[])',
];

/** The operations' actions (src/sql/operations.ts): security-definer, so an operator needs no write right on jobs. */
const OPERATE_FUNCTIONS = [
  'retry_jobs(bigint[])',
  'reschedule_jobs(bigint[], timestamptz)',
  'purge_jobs(bigint[])',
  'cancel_jobs(bigint[])',
];

/** Table privileges, read from the statements in src/sql/ each side runs. */
const TABLES: Record<RoleKind, Record<string, string>> = {
  enqueuer: {},
  worker: {
    // Claims and outcome writes update, deleteSucceeded and pruning delete;
    // enqueues from handlers go through add_job(). A schedule's tick inserts
    // its job directly (ON CONFLICT against the tick's unique index), so the
    // worker may insert a pending job's columns and no others.
    jobs: 'SELECT, UPDATE, DELETE, INSERT (task, payload, queue, priority, max_attempts, max_attempts_given, run_at, schedule, scheduled_for)',
    // Declared at start (upsert), read and advanced at each tick.
    schedules: 'SELECT, INSERT, UPDATE',
    supervisors: 'SELECT, INSERT, UPDATE, DELETE',
    maintenance: 'SELECT, INSERT, UPDATE',
    // Marks its messages processed (the messages_updated trigger lets no
    // other column change, nor a processed one come back); prunes old ones.
    // Never INSERT: only an operator sends control messages.
    messages: 'SELECT, UPDATE (processed_at), DELETE',
    responses: 'SELECT, INSERT, DELETE',
    worker_log: 'SELECT, INSERT, DELETE',
    log_followers: 'SELECT',
    // A limited queue's claim locks its row and records its starts.
    queues: 'SELECT, UPDATE',
    group_starts: 'SELECT, INSERT, UPDATE, DELETE',
    // Pruning deletes a pruned dependent's rows.
    job_dependencies: 'SELECT, DELETE',
  },
  operator: {
    supervisors: 'SELECT',
    messages: 'SELECT, INSERT',
    responses: 'SELECT, DELETE',
    worker_log: 'SELECT',
    log_followers: 'SELECT, INSERT, UPDATE, DELETE',
    // grapevine schedule add, list, pause, resume, remove.
    schedules: 'SELECT, INSERT, UPDATE, DELETE',
    // grapevine queue list; changes go through configure_queue().
    queues: 'SELECT',
    // grapevine jobs and stats, the dashboard; the actions' filters select their ids.
    jobs: 'SELECT',
  },
};

const SEQUENCES: Record<RoleKind, string[]> = {
  enqueuer: [],
  worker: ['claim_tokens'],
  operator: ['message_ids'],
};

const FUNCTIONS: Record<RoleKind, string[]> = {
  enqueuer: ENQUEUE_FUNCTIONS,
  // Handlers' addJob() runs in the worker's threads.
  worker: [...ENQUEUE_FUNCTIONS, ...WORKER_FUNCTIONS],
  operator: [
    'get_job(bigint)',
    'watch_job(bigint)',
    'watch_progress(bigint, integer)',
    'cancel_job(bigint)',
    'notify(text, text)',
    'configure_queue(text, jsonb)',
    // grapevine job ID.
    'dependencies_of(bigint)',
    'dependents_of(bigint, integer)',
    ...OPERATE_FUNCTIONS,
  ],
};

/** The statements that give `role` what a `kind` needs in `schema`, in order. They only add rights. */
export function grantStatements(schema: string, role: string, kind: RoleKind): string[] {
  const s = quoteIdent(schema);
  const r = quoteIdent(role);
  const list = (names: string[]) => names.map((name) => `${s}.${name}`).join(', ');
  return [
    `GRANT USAGE ON SCHEMA ${s} TO ${r}`,
    `GRANT SELECT ON TABLE ${list(READ_BY_ALL)} TO ${r}`,
    ...Object.entries(TABLES[kind]).map(([table, rights]) => `GRANT ${rights} ON TABLE ${s}.${table} TO ${r}`),
    ...(SEQUENCES[kind].length > 0 ? [`GRANT USAGE ON SEQUENCE ${list(SEQUENCES[kind])} TO ${r}`] : []),
    `GRANT EXECUTE ON FUNCTION ${list(FUNCTIONS[kind])} TO ${r}`,
  ];
}

export interface GrantOptions {
  /** Defaults to DATABASE_URL. */
  connectionString?: string;
  /** Defaults to "grapevine". */
  schema?: string;
  /** An existing role (grapevine does not create roles or handle their passwords). */
  role: string;
  /** enqueuer, worker or operator. */
  as: string;
}

/** `grapevine grant ROLE --as KIND --print`: the SQL, one statement per line, without connecting. */
export function grantSql(options: GrantOptions): string {
  const { schema, role, kind } = validateGrant(options);
  return grantStatements(schema, role, kind)
    .map((statement) => `${statement};`)
    .join('\n');
}

/**
 * `grapevine grant ROLE --as KIND`: brings the schema up to date (the grants
 * name its current functions), then applies grantStatements() in one
 * transaction. Run as the schema's owner; run again after an upgrade, so a
 * role gets what a new release's statements need.
 */
export async function grantRole(options: GrantOptions): Promise<void> {
  const { schema, role, kind } = validateGrant(options);
  const connectionString = resolveConnectionString(options.connectionString);
  const pool = createPool(connectionString, { max: 1, applicationName: 'grapevine-grant' });
  try {
    await explainConnectionErrors(connectionString, async () => {
      const { rows } = await pool.query('SELECT current_user AS me, EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AS found', [role]);
      if (!rows[0].found) {
        throw configError(
          `role "${role}" does not exist: create it first (CREATE ROLE ${quoteIdent(role)} LOGIN PASSWORD '...'), then grant it rights`,
        );
      }
      await migrate(pool, schema);
      await applyGrants(pool, grantStatements(schema, role, kind)).catch((err: unknown) => {
        if ((err as { code?: string }).code !== '42501') throw err;
        throw new GrapevineError(
          'GRAPEVINE_PERMISSION_DENIED',
          `role "${rows[0].me}" may not grant rights on schema "${schema}" (${(err as Error).message}): ` +
            "run grapevine grant as the schema's owner (the role that ran grapevine migrate) or a superuser",
          { cause: err },
        );
      });
    });
  } finally {
    await pool.end().catch(() => {});
  }
}

function applyGrants(pool: pg.Pool, statements: string[]): Promise<void> {
  return withTransaction(pool, async (client) => {
    for (const statement of statements) await client.query(statement);
  });
}

function validateGrant(options: GrantOptions): { schema: string; role: string; kind: RoleKind } {
  const schema = validateSchemaName(options.schema ?? DEFAULTS.schema);
  const { role } = options;
  // PostgreSQL's own limits on a role name; any other character is quoted.
  if (typeof role !== 'string' || role.length === 0 || Buffer.byteLength(role) > 63 || role.includes('\0')) {
    throw configError(`invalid role name ${JSON.stringify(role)}: give the name of an existing PostgreSQL role (1 to 63 bytes)`);
  }
  if (!(ROLE_KINDS as readonly string[]).includes(options.as)) {
    throw configError(`unknown kind of role ${JSON.stringify(options.as)}: use --as ${ROLE_KINDS.join(', --as ')}`);
  }
  return { schema, role, kind: options.as as RoleKind };
}
