/**
 * A supervisor in its own process, for grapevine-jobs/testing and chaos tests.
 * Prints "ready <supervisor id>" once running. SIGUSR2 kills one busy
 * thread (recording the fault first); SIGTERM stops gracefully.
 * Arguments arrive as JSON in GRAPEVINE_TEST_CHILD.
 */
import pg from 'pg';
import { startSupervisor, type SupervisorOptions } from './index.ts';
import { createLogger } from '../src/log.ts';
import { quoteIdent } from '../src/schema/channels.ts';

const options = JSON.parse(process.env.GRAPEVINE_TEST_CHILD ?? '{}') as SupervisorOptions & { logLevel?: string };
const logger = createLogger({ level: options.logLevel ?? 'warn' });
const supervisor = await startSupervisor({ ...options, logger });
const faults = new pg.Pool({ connectionString: options.connectionString, max: 1 });
faults.on('error', () => {});
const table = `${quoteIdent(options.schema!)}.faults`;

process.on('SIGUSR2', () => {
  const busy = supervisor.status().threads.filter((t) => t.currentJobs.length > 0);
  const target = busy[Math.floor(Math.random() * busy.length)]?.threadId;
  if (target === undefined) return;
  // Recorded before the kill, so a checker never sees the re-run without its cause.
  faults
    .query(`INSERT INTO ${table} (kind, supervisor_id, thread_id) VALUES ('thread-killed', $1, $2)`, [supervisor.id, target])
    .then(() => supervisor.killThread(target))
    .catch((err: Error) => logger.warn({ err: err.message }, 'could not record a fault'));
});
let signals = 0;
const stop = () => {
  signals++;
  void supervisor.stop(signals > 1 ? { graceMs: 0 } : {});
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

process.stdout.write(`ready ${supervisor.id}\n`);
await supervisor.stopped;
await faults.end();
process.exit(0);
