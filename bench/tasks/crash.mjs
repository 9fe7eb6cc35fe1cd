// grapevine bench task for the thread-crash recovery: the first run records itself in
// the events table, then reports the moment it kills its own thread and calls
// process.exit(1) (in a worker thread that ends the thread, not the process); the
// re-run records when it started. The kill moment goes over the bench's channel, taken
// after the insert, so the first run's own database write is not counted as recovery.
import { nowMs, reportKilled } from '../lib/channel.mjs';

export default async function crash(payload, helpers) {
  const at = nowMs();
  const { rowCount } = await helpers.query(
    `INSERT INTO ${payload.events} (job_id, kind, at_ms, pid) VALUES ($1, 'first', $2, $3) ON CONFLICT DO NOTHING`,
    [helpers.job.id, at, process.pid],
  );
  if (rowCount === 1) {
    reportKilled(helpers.job.id, nowMs());
    process.exit(1);
  }
  await helpers.query(`INSERT INTO ${payload.events} (job_id, kind, at_ms, pid) VALUES ($1, 'rerun', $2, $3) ON CONFLICT DO NOTHING`, [
    helpers.job.id,
    at,
    process.pid,
  ]);
}
