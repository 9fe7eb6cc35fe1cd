import { rowsOf, type Queryable } from '../db.ts';
import type { JobState } from '../job.ts';
import { channelsFor, quoteIdent } from '../schema/channels.ts';
import { bind, oneRow, perSchema, statement, type Statement } from './statement.ts';

/** The statements of helpers.progress() (threads) and of its watchers (waitForJob's onProgress). */
interface ProgressStatements {
  write: Statement;
  watch: Statement;
}

const progressStatements: (schema: string) => ProgressStatements = perSchema((schema) => {
  const s = quoteIdent(schema);
  const ch = channelsFor(schema);
  return {
    // $1 [{id, token, progress}]. Fenced on the claim token like an outcome:
    // a run that lost its claim writes nothing. Announces only the jobs a
    // watcher marked (watch_progress()), so unwatched progress costs this
    // UPDATE alone: a NOTIFY would serialise the commit with every other
    // notifying commit of the cluster. Returns the ids the fence turned away.
    write: statement(
      schema,
      'write_progress',
      `WITH r AS (
         SELECT * FROM jsonb_to_recordset($1::jsonb) AS r(id bigint, token bigint, progress jsonb)),
       done AS (
         UPDATE ${s}.jobs j SET progress = r.progress
           FROM r
          WHERE j.id = r.id AND j.claim_token = r.token AND j.state = 'running'
         RETURNING j.id, j.progress_watched_until)
       SELECT ${s}.notify_ids('${ch.progress}', ARRAY(SELECT id FROM done WHERE progress_watched_until > now())),
              ARRAY(SELECT r.id::text FROM r WHERE NOT EXISTS (SELECT 1 FROM done WHERE done.id = r.id)) AS rejected`,
    ),
    // $1 id, $2 how long the mark lasts (ms). See src/schema/functions/watch_progress.sql.
    watch: statement(schema, 'watch_progress', `SELECT state, progress FROM ${s}.watch_progress($1, $2)`),
  };
});

/** One job's latest progress, as its thread hands it to writeProgress: `progress` is JSON text already. */
export interface ProgressUpdate {
  id: string;
  token: string;
  progress: string;
}

/** Stores the jobs' latest progress (one statement for all); returns the ids the fence turned away. */
export async function writeProgress(db: Queryable, schema: string, p: { updates: readonly ProgressUpdate[] }): Promise<string[]> {
  // Ids and tokens are decimal bigints and values are JSON already, so the parameter is assembled as text.
  const rows = p.updates.map((u) => `{"id":${u.id},"token":${u.token},"progress":${u.progress}}`);
  const row = await oneRow<{ rejected: string[] }>(db, bind(progressStatements(schema).write, [`[${rows.join(',')}]`]));
  return row.rejected;
}

/** Marks the job's progress as watched for `watchMs` and reads it; undefined if there is no such job. */
export async function watchProgress(
  db: Queryable,
  schema: string,
  p: { id: string; watchMs: number },
): Promise<{ state: JobState; progress: unknown } | undefined> {
  return (await rowsOf<{ state: JobState; progress: unknown }>(db, bind(progressStatements(schema).watch, [p.id, p.watchMs])))[0];
}
