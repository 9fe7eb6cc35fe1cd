import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, withClient } from '../src/db.ts';
import { claimByIdsQuery } from '../src/sql/jobs.ts';
import { claimBatch } from '../threads/claim.ts';
import { useMigratedSchema } from './helpers/db.ts';
import { startProxy, type Proxy as TcpProxy } from './helpers/proxy.ts';

// A server that starts a fast shutdown just as a new connection becomes
// ready sends the connection's ReadyForQuery and its FATAL in one packet. The
// pool hands the connection out on the first and the driver reports the
// second as an 'error' event before the caller has had a chance to run: with
// nobody listening, that event ends the process (a supervisor died of it in
// the chaos suite, during a PostgreSQL restart) or the thread.
const db = useMigratedSchema('checkout');
let proxy: TcpProxy;
beforeAll(async () => {
  proxy = await startProxy(db.url);
});
afterAll(() => proxy?.close());

function proxiedPool(pipeline: boolean) {
  return createPool(proxy.url, { max: 2, applicationName: 'grapevine-checkout-test', pipeline });
}

describe('a connection the server ends as it is handed out', () => {
  it('fails the statements of withClient with a connection error, and the next call gets a working connection', async () => {
    const pool = proxiedPool(false);
    try {
      proxy.endAsReady(1);
      await expect(withClient(pool, (client) => client.query('SELECT 1'))).rejects.toThrow(/connection|terminat/i);
      const { rows } = await withClient(pool, (client) => client.query('SELECT 2 AS n'));
      expect(rows[0].n).toBe(2);
    } finally {
      await pool.end();
    }
  });

  it("fails a thread's claim and leaves the job pending, with no attempt counted", async () => {
    const [id] = await db.client.addJobs([{ task: 'noop', payload: {} }]);
    const pool = proxiedPool(true);
    const claim = claimByIdsQuery(db.schema, {
      ids: [id],
      tasks: ['noop'],
      queues: null,
      owner: 'checkout-test',
      thread: 1,
      leaseMs: 60_000,
    });
    try {
      proxy.endAsReady(1);
      await expect(claimBatch(pool, claim)).rejects.toThrow(/connection|terminat/i);
      const { rows } = await db.pool.query(`SELECT state, attempts FROM ${db.s}.jobs WHERE id = $1`, [id]);
      expect(rows[0]).toEqual({ state: 'pending', attempts: 0 });
      // The pool recovers: the next claim takes the job.
      const { jobs, committed } = await claimBatch(pool, claim);
      expect(jobs.map((j) => j.id)).toEqual([id]);
      expect(await committed).toBe(null);
    } finally {
      await pool.end();
    }
  });
});
