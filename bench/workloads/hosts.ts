// Many hosts (grapevine): N supervisor processes of one thread each, as N single-core hosts
// would run them, drain the throughput backlog straight against PostgreSQL or through a
// PgBouncer in transaction mode (LISTEN direct, statements unnamed). Besides throughput it
// reports the server's connections (pg_stat_activity sampled every 20 ms, the bench's own
// left out) against the budgets' sum, N × (maxConnections + 1 LISTEN), and the claim
// statements that claimed nothing per job. On a 2-core host the throughput is bounded by
// the cores; the targets are the connections and the empty claims.
import pg from 'pg';
import { DEFAULTS } from 'grapevine-jobs';
import { startPgBouncer } from '../../test/helpers/pgbouncer.ts';
import { sleep } from '../lib/stats.ts';
import type { TrialSpec } from '../trial.ts';
import { CONDUCTOR_APPLICATION, drainWithSupervisors } from './scaleout.ts';

/** Server connections the pooler may open for the bench database, at most. */
const POOL_SIZE = 20;

export async function run(spec: TrialSpec): Promise<Record<string, unknown>> {
  const via = spec.via ?? 'direct';
  const bouncer = via === 'pgbouncer' ? await startPgBouncer(spec.connectionString, { poolSize: POOL_SIZE }) : null;
  const sampler = await sampleConnections(spec.connectionString);
  try {
    const child = bouncer ? { connectionString: bouncer.url, listenUrl: spec.connectionString, preparedStatements: false } : {};
    const result = await drainWithSupervisors(spec, { threads: 1, child });
    const budget = spec.supervisors * (DEFAULTS.maxConnections + 1);
    return { ...result, via, serverConnections: sampler.max(), budget, ...(bouncer ? { poolSize: POOL_SIZE } : {}) };
  } finally {
    await sampler.stop();
    await bouncer?.stop();
  }
}

/** Samples the client connections to the bench database that are not the bench's own, keeping the most. */
async function sampleConnections(connectionString: string): Promise<{ max(): number; stop(): Promise<void> }> {
  const client = new pg.Client({ connectionString, application_name: `${CONDUCTOR_APPLICATION}-sampler` });
  await client.connect();
  let most = 0;
  let running = true;
  const sampling = (async () => {
    while (running) {
      const { rows } = await client.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE datname = current_database() AND backend_type = 'client backend' AND application_name NOT LIKE $1`,
        [`${CONDUCTOR_APPLICATION}%`],
      );
      most = Math.max(most, rows[0].n);
      await sleep(20);
    }
  })();
  return {
    max: () => most,
    async stop() {
      running = false;
      await sampling.catch(() => undefined);
      await client.end();
    },
  };
}
