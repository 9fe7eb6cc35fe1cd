// grapevine bench task for the supervisor-SIGKILL recovery: the first run records its
// process id and then waits (the bench SIGKILLs that process); the run that follows on
// another supervisor records when it started and returns.
import { nowMs } from '../lib/channel.mjs';

export default async function hang(payload, helpers) {
  const at = nowMs();
  const { rowCount } = await helpers.query(
    `INSERT INTO ${payload.events} (job_id, kind, at_ms, pid) VALUES ($1, 'first', $2, $3) ON CONFLICT DO NOTHING`,
    [helpers.job.id, at, process.pid],
  );
  if (rowCount === 1) {
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, payload.hangMs ?? 60_000);
      helpers.signal.addEventListener(
        'abort',
        () => {
          clearTimeout(timer);
          resolve();
        },
        { once: true },
      );
    });
    return;
  }
  await helpers.query(`INSERT INTO ${payload.events} (job_id, kind, at_ms, pid) VALUES ($1, 'rerun', $2, $3) ON CONFLICT DO NOTHING`, [
    helpers.job.id,
    at,
    process.pid,
  ]);
}
