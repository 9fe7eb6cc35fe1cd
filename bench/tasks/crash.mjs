// grapevine bench task for the thread-crash recovery: the first run records its time
// in the events table and kills its own thread with process.exit(1) (in a worker
// thread that ends the thread, not the process); the re-run records when it started.
import { nowMs } from '../lib/channel.mjs';

export default async function crash(payload, helpers) {
  const at = nowMs();
  const { rowCount } = await helpers.query(
    `INSERT INTO ${payload.events} (job_id, kind, at_ms, pid) VALUES ($1, 'first', $2, $3) ON CONFLICT DO NOTHING`,
    [helpers.job.id, at, process.pid],
  );
  if (rowCount === 1) process.exit(1);
  await helpers.query(
    `INSERT INTO ${payload.events} (job_id, kind, at_ms, pid) VALUES ($1, 'rerun', $2, $3) ON CONFLICT DO NOTHING`,
    [helpers.job.id, at, process.pid],
  );
}
