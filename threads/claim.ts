import type pg from 'pg';
import { checkOut, rowsOf, type TypedQuery } from '../src/db.ts';
import type { ClaimedJobRow } from '../src/sql/jobs.ts';

/** A claimed batch whose commit may still be on its way to disk. */
export interface PendingClaim {
  jobs: ClaimedJobRow[];
  /**
   * Settles once PostgreSQL has acknowledged the claim's commit: with null,
   * or with the error if the commit failed (the connection broke, the server
   * went away). Never rejects.
   */
  committed: Promise<Error | null>;
}

/**
 * Claims a batch on a pipelined connection so that its handlers can start
 * before the claim has reached the disk.
 *
 * BEGIN, the claim and COMMIT are sent together, before any answer is read. PostgreSQL answers the
 * claim as soon as the rows are locked and marked running, and only then
 * flushes the commit, so the rows arrive one WAL flush earlier than with a
 * claim in its own transaction, a large part of a claim's time. COMMIT is
 * already on the wire when the handlers start: a thread
 * that dies in its first instant still commits its claim, and the
 * supervisor's release waits for the row locks (lockJobsQuery in src/sql/jobs.ts).
 *
 * Whatever a job does in the database must wait for `committed`: the
 * handler's helpers and the outcome write. Otherwise a handler could take
 * PostgreSQL down before its attempt was counted, and run again forever;
 * and an outcome written before the commit would not see the claim.
 */
export async function claimBatch(
  pool: pg.Pool,
  claim: TypedQuery<ClaimedJobRow>,
  /** Sent after the claim, in its transaction (adoptTaskAttemptsQuery in src/sql/jobs.ts); its failure fails the commit. */
  after: TypedQuery<never> | null = null,
): Promise<PendingClaim> {
  // Not withClient() (src/db.ts): the rows are handed back while the client
  // is still out, waiting for the commit.
  const { client, release } = await checkOut(pool);
  // Sent in one go: nothing waits for BEGIN's answer, and a failed claim turns COMMIT into a rollback.
  const begun = client.query('BEGIN');
  const claimed = rowsOf(client, claim);
  // Awaited with the commit: once a statement failed, COMMIT answers ROLLBACK without an error.
  const adopted = after ? client.query(after) : null;
  const commit = client.query('COMMIT');
  const committed = Promise.all([begun, adopted, commit]).then(
    () => {
      release();
      return null;
    },
    (err: Error) => {
      release(err);
      return err;
    },
  );
  let jobs: ClaimedJobRow[];
  try {
    jobs = await claimed;
  } catch (err) {
    await committed;
    throw err;
  }
  return { jobs, committed };
}
