// The floor for this machine: the least any PostgreSQL job system can spend between
// "enqueue sent" and "a worker holds the job". Plain pg, two connections, nothing else:
// INSERT + NOTIFY on one, LISTEN + one SKIP LOCKED claim on the other.
import pg from 'pg';
import { nowMs, percentiles, sleep, type Percentiles } from './lib/stats.ts';

export interface FloorResult {
  samples: number[];
  latency: Percentiles;
}

export async function measureFloor(connectionString: string, schema: string, samples: number, intervalMs: number): Promise<FloorResult> {
  const producer = new pg.Client({ connectionString });
  const consumer = new pg.Client({ connectionString });
  await Promise.all([producer.connect(), consumer.connect()]);
  try {
    await producer.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
    await producer.query(`CREATE TABLE "${schema}".floor_jobs (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      state text NOT NULL DEFAULT 'pending',
      payload jsonb NOT NULL DEFAULT '{}')`);
    await producer.query(`CREATE INDEX ON "${schema}".floor_jobs (id) WHERE state = 'pending'`);
    const channel = `${schema}_floor`;
    await consumer.query(`LISTEN "${channel}"`);

    const claimSql = `UPDATE "${schema}".floor_jobs SET state = 'running'
      WHERE id = (SELECT id FROM "${schema}".floor_jobs WHERE state = 'pending'
                  ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
      RETURNING id`;
    const insertSql = `WITH j AS (INSERT INTO "${schema}".floor_jobs (payload) VALUES ('{}') RETURNING id)
      SELECT pg_notify('${channel}', j.id::text) FROM j`;

    const out: number[] = [];
    let waiter: ((t: number) => void) | null = null;
    consumer.on('notification', () => {
      // Claim straight from the notification handler, as a worker would.
      consumer.query({ name: 'floor_claim', text: claimSql, values: [] }).then((r) => {
        if (r.rowCount && waiter) waiter(nowMs());
      });
    });
    // Warm-up round trips are discarded.
    const total = samples + 10;
    for (let i = 0; i < total; i++) {
      const claimed = new Promise<number>((resolve) => (waiter = resolve));
      const t0 = nowMs();
      await producer.query({ name: 'floor_insert', text: insertSql, values: [] });
      const t1 = await claimed;
      if (i >= 10) out.push(t1 - t0);
      await sleep(intervalMs);
    }
    return { samples: out, latency: percentiles(out) };
  } finally {
    await Promise.all([producer.end(), consumer.end()]);
  }
}
