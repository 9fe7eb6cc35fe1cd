import { describe, expect, it } from 'vitest';
import { eventually, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';
import { startProxy } from './helpers/proxy.ts';

const db = useMigratedSchema('stalled');
const { client, s } = db;

// Connections the network drops without a word (a partition, a NAT or
// firewall that forgot the flow): TCP alone would report them only after
// about a quarter of an hour of retransmissions. The proxy plays that part.
describe('a connection the network drops silently', () => {
  const OPTIONS = { threads: 1, concurrency: 1, statementTimeoutMs: 300, heartbeatIntervalMs: 200, leaseMs: 60_000, shutdownGraceMs: 0 };

  it('does not hold up a thread: the outcome write gives the connection up and records the job over a new one', async () => {
    const gate = `${s}.gate_outcome`;
    await db.pool.query(`CREATE TABLE ${gate} (open boolean NOT NULL)`);
    await db.pool.query(`INSERT INTO ${gate} VALUES (false)`);
    const proxy = await startProxy(db.url);
    const supervisor = await startTestSupervisor(db, { ...OPTIONS, connectionString: proxy.url });
    try {
      const id = await client.addJob('block', { gate }, { maxAttempts: 1 });
      await eventually(async () => ((await client.getJob(id))?.state === 'running' ? true : null), 'the job to run');
      // The thread's claim and outcome connections go silent; its handler's do not.
      expect(proxy.blackholeApplications('grapevine-thread-')).toBeGreaterThan(0);
      await db.pool.query(`UPDATE ${gate} SET open = true`);
      expect(await client.waitForJob(id, { timeoutMs: 30_000 })).toMatchObject({ state: 'succeeded', attempts: 1, result: { released: true } });
    } finally {
      await supervisor.stop({ graceMs: 0 });
      await proxy.close();
    }
  });

  it("does not stop the supervisor's heartbeat, which renews its jobs' leases", async () => {
    const proxy = await startProxy(db.url);
    const supervisor = await startTestSupervisor(db, { ...OPTIONS, connectionString: proxy.url });
    try {
      const beat = async () =>
        (await db.pool.query(`SELECT heartbeat_at, now() AS now FROM ${s}.supervisors WHERE id = $1`, [supervisor.id])).rows[0] as { heartbeat_at: Date; now: Date };
      await eventually(async () => ((await beat())?.heartbeat_at ? true : null), 'a first heartbeat');
      expect(proxy.blackholeApplications('grapevine-supervisor')).toBeGreaterThan(0);
      const silencedAt = (await beat()).now;
      await eventually(async () => ((await beat()).heartbeat_at > silencedAt ? true : null), 'a heartbeat written after the connections went silent');
    } finally {
      await supervisor.stop({ graceMs: 0 });
      await proxy.close();
    }
  });
});
