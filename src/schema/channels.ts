/**
 * Channel names are derived from the schema so that two grapevine schemas in
 * one database never hear each other. Schema names are at most 40 plain
 * characters (config.ts), which keeps every channel under PostgreSQL's
 * 63-byte limit.
 */
export interface Channels {
  /** Ids of jobs that became due: inserts, retries, released and reaped jobs. */
  jobs: string;
  /** Ids of jobs that reached a terminal state; waitForJob() listens here. */
  done: string;
  /** Ids of jobs whose progress changed while someone watched it (waitForJob's onProgress). */
  progress: string;
  /** Control messages to supervisors (cancel, PING, PAUSE, ...). */
  control: string;
  /** Message ids that got a response; sendAndWait()/getResponse() listen here. */
  responses: string;
  /** Worker ids whose log grew; `grapevine log --follow` listens here. */
  log: string;
}

export function channelsFor(schema: string): Channels {
  return {
    jobs: `${schema}_jobs`,
    done: `${schema}_done`,
    progress: `${schema}_progress`,
    control: `${schema}_control`,
    responses: `${schema}_responses`,
    log: `${schema}_log`,
  };
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
