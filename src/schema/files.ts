import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT } from '../version.ts';
import { quoteIdent } from './channels.ts';

/**
 * The schema's SQL lives in plain files beside this module (src/schema/ in
 * the package, which ships them): frozen migrations in migrations/, one
 * redefinable function per file in functions/. They are read when first
 * needed rather than at import, so a program that never migrates never
 * reads them.
 */
const SCHEMA_DIR = path.join(PACKAGE_ROOT, 'src', 'schema');

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export interface SchemaFunction {
  name: string;
  sql: string;
  /** sha256 of the file's text: the function is applied again when this changes. */
  checksum: string;
}

/**
 * The order functions are applied in: callees before their callers, so that
 * a caller's new text never runs against a callee's old one within the
 * migrating transaction. Every file in functions/ must be listed here.
 */
const FUNCTION_ORDER = [
  'notify',
  'notify_ids_always',
  'notify_ids',
  'jobs_inserted',
  'held_queues',
  'pending_queues',
  'limited_candidates',
  'claim_limited',
  'messages_updated',
  'claim_next',
  'claim_ids',
  'limited_due',
  'has_due',
  'configure_queue',
  'prune_finished',
  'unhandled_tasks',
  'resolve_dependencies',
  'jobs_finished',
  'job_specs',
  'key_held',
  'add_jobs_after',
  'add_jobs',
  'add_job',
  'get_job',
  'dependencies_of',
  'dependents_of',
  'watch_job',
  'watch_progress',
  'cancel_job',
  'cancel_jobs',
  'retry_jobs',
  'reschedule_jobs',
  'purge_jobs',
];

const MIGRATION_FILE = /^(\d{4})_([a-z0-9_]+)\.sql$/;

let migrationsRead: readonly Migration[] | undefined;
let functionsRead: readonly SchemaFunction[] | undefined;

/** The migrations, oldest first. Append-only: a released file is never edited, only followed by a new one. */
export function migrations(): readonly Migration[] {
  if (!migrationsRead) {
    const read = sqlFiles('migrations').map((file) => {
      const match = MIGRATION_FILE.exec(file);
      if (!match) throw new Error(`src/schema/migrations/${file} is not named like 0011_what_it_does.sql`);
      return { version: Number(match[1]), name: match[2], sql: readSql('migrations', file) };
    });
    const repeated = read.find((m, i) => i > 0 && m.version === read[i - 1].version);
    if (repeated) throw new Error(`two files in src/schema/migrations are numbered ${repeated.version}`);
    migrationsRead = read;
  }
  return migrationsRead;
}

export function latestVersion(): number {
  return migrations().at(-1)!.version;
}

/** The functions in the order they are applied. */
export function schemaFunctions(): readonly SchemaFunction[] {
  if (!functionsRead) {
    const files = sqlFiles('functions');
    const unlisted = files.filter((file) => !FUNCTION_ORDER.includes(path.basename(file, '.sql')));
    if (unlisted.length > 0) throw new Error(`src/schema/functions/${unlisted[0]} is missing from FUNCTION_ORDER in src/schema/files.ts`);
    functionsRead = FUNCTION_ORDER.map((name) => {
      const sql = readSql('functions', `${name}.sql`);
      return { name, sql, checksum: createHash('sha256').update(sql).digest('hex') };
    });
  }
  return functionsRead;
}

/** The file's SQL for one schema: `:SCHEMA` is the quoted schema name, the only placeholder. */
export function inSchema(sql: string, schema: string): string {
  return sql.replace(/:SCHEMA\b/g, quoteIdent(schema));
}

function sqlFiles(folder: string): string[] {
  const dir = path.join(SCHEMA_DIR, folder);
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch (err) {
    // A package built without them, or a PACKAGE_ROOT that is not this package.
    throw new Error(`grapevine's schema files are not in ${dir}: the package must ship src/schema/**/*.sql beside package.json`, {
      cause: err,
    });
  }
  return files.filter((file) => file.endsWith('.sql')).sort();
}

function readSql(folder: string, file: string): string {
  return readFileSync(path.join(SCHEMA_DIR, folder, file), 'utf8');
}
