import { describe, expect, it } from 'vitest';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';
import { startProxy } from './helpers/proxy.ts';

const db = useMigratedSchema('stalled');
const { s } = db;

// Connections the network drops without a word (a partition, a NAT or
// firewall that forgot the flow): TCP alone would report them only after
// about a quarter of an hour of retransmissions. The proxy plays that part.
describe("the supervisor's connections, when the network drops them silently", () => {
  it('are given up when a statement gets no answer, and the heartbeat that renews its leases goes on over new ones', async () => {
    const proxy = await startProxy(db.url);
    const supervisor = await startTestSupervisor(db, {
      connectionString: proxy.url,
      threads: 1,
      statementTimeoutMs: 1_000,
      heartbeatIntervalMs: 200,
      leaseMs: 4_000,
      shutdownGraceMs: 0,
    });
    try {
      const beat = async () =>
        (await db.pool.query(`SELECT heartbeat_at, now() AS now FROM ${s}.supervisors WHERE id = $1`, [supervisor.id])).rows[0] as {
          heartbeat_at: Date;
          now: Date;
        };
      await eventually(async () => ((await beat())?.heartbeat_at ? true : null), 'a first heartbeat');
      expect(proxy.blackholeApplications('grapevine-supervisor')).toBeGreaterThan(0);
      // A statement sent into a silent connection never gets an answer: without a deadline it would hold the connection for good.
      await eventually(
        () => (proxy.givenUp('grapevine-supervisor') > 0 ? true : null),
        'a silent connection with a statement on it to be given up',
      );
      const givenUpAt = (await beat()).now;
      await eventually(async () => ((await beat()).heartbeat_at > givenUpAt ? true : null), 'a heartbeat written after that');
    } finally {
      await supervisor.stop({ graceMs: 0 });
      await proxy.close();
    }
  });
});
