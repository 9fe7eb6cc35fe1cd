import { describe, expect, it } from 'vitest';
import { startTestSupervisor, useMigratedSchema } from './helpers/db.ts';

const db = useMigratedSchema('handler_tx');
const { client, s } = db;

describe('a handler that writes in a transaction', () => {
  it('commits with helpers.transaction, rolls back on a throw or a failure inside, and gets an error instead of a transaction left open, failed or ended early', async () => {
    const table = `${s}.tx_rows`;
    await db.pool.query(`CREATE TABLE ${table} (v text NOT NULL)`);
    // One thread running one job at a time, with one handler connection:
    // every statement below goes over the same connection.
    const supervisor = await startTestSupervisor(db, { threads: 1, concurrency: 1, handlerConnections: 1, shutdownGraceMs: 0 });
    const run = async (mode: string) =>
      client.waitForJob(await client.addJob('transaction', { table, mode }, { maxAttempts: 1 }), { timeoutMs: 30_000 });
    try {
      expect(await run('commit')).toMatchObject({ state: 'succeeded', result: 'committed' });
      const thrown = await run('throw');
      expect(thrown).toMatchObject({ state: 'failed' });
      expect(thrown.lastError).toMatch(/^Error: changed my mind/);
      expect(await run('caught')).toMatchObject({ state: 'succeeded', result: 'GRAPEVINE_TRANSACTION_ROLLED_BACK' });
      // Its COMMIT went through; the statements after it would not have been in the transaction.
      expect(await run('ended-inside')).toMatchObject({ state: 'succeeded', result: 'GRAPEVINE_TRANSACTION_ENDED' });
      expect(await run('left-open')).toMatchObject({
        state: 'succeeded',
        result: ['GRAPEVINE_TRANSACTION_LEFT_OPEN', 'GRAPEVINE_TRANSACTION_LEFT_OPEN', '22012'],
      });
    } finally {
      await supervisor.stop({ graceMs: 0 });
    }
    const { rows } = await db.pool.query(`SELECT v FROM ${table} ORDER BY v`);
    expect(rows.map((r) => r.v)).toEqual(['a', 'after', 'b', 'committed early']);
  });
});
