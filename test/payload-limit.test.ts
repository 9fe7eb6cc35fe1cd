import { describe, expect, it } from 'vitest';
import { createClient, GrapevineError } from '../supervisor/public.ts';
import { useMigratedSchema } from './helpers/db.ts';

/**
 * One payload limit, a setting of the schema: the database refuses a larger
 * payload on every path into the jobs table, and clients read the setting
 * and refuse before sending.
 */
const db = useMigratedSchema('payload_limit');

/** A payload whose JSON text, as PostgreSQL prints it ({"blob": "xx..."}), is `bytes` long. */
function payloadOf(bytes: number): { blob: string } {
  return { blob: 'x'.repeat(bytes - '{"blob": ""}'.length) };
}

async function setLimit(bytes: number): Promise<void> {
  await db.pool.query(`UPDATE ${db.s}.settings SET max_payload_bytes = $1`, [bytes]);
}

async function jobCount(): Promise<number> {
  return (await db.pool.query(`SELECT count(*)::int AS n FROM ${db.s}.jobs`)).rows[0].n;
}

/** Runs the statement and returns its error (null: it succeeded). */
async function failureOf(text: string, values: unknown[] = []): Promise<{ code?: string; message: string } | null> {
  return db.pool.query(text, values).then(
    () => null,
    (err: { code?: string; message: string }) => err,
  );
}

describe('the schema payload limit', () => {
  it('is 1 MiB in a new schema, and at least 1 KiB', async () => {
    const { rows } = await db.pool.query(`SELECT max_payload_bytes FROM ${db.s}.settings`);
    expect(rows).toEqual([{ max_payload_bytes: 1024 * 1024 }]);
    expect((await failureOf(`UPDATE ${db.s}.settings SET max_payload_bytes = 1023`))?.code).toBe('23514');
  });

  it('is enforced on add_job(), add_jobs() and a plain INSERT, with an error naming the size, the limit and how to change it', async () => {
    await setLimit(1500);
    const before = await jobCount();
    const expectRefused = (err: { code?: string; message: string } | null, task: string, bytes: number) => {
      expect(err?.code).toBe('54000');
      expect(err?.message).toBe(
        `payload of task "${task}" is ${bytes} bytes, over the 1500-byte limit of schema ${db.schema}: store large data elsewhere and pass a reference, ` +
          `or raise the limit as the schema's owner (UPDATE ${db.schema}.settings SET max_payload_bytes = ...)`,
      );
    };
    expectRefused(await failureOf(`SELECT ${db.s}.add_job('square', $1)`, [JSON.stringify(payloadOf(1501))]), 'square', 1501);
    // In bulk, one payload over the limit refuses the whole statement and is the one named.
    const bulk = [
      { task: 'square', payload: payloadOf(20) },
      { task: 'big', payload: payloadOf(5000) },
      { task: 'square', payload: payloadOf(1500) },
    ];
    expectRefused(await failureOf(`SELECT ${db.s}.add_jobs($1)`, [JSON.stringify(bulk)]), 'big', 5000);
    expectRefused(
      await failureOf(`INSERT INTO ${db.s}.jobs (task, payload) VALUES ('raw', $1)`, [JSON.stringify(payloadOf(2000))]),
      'raw',
      2000,
    );
    expect(await jobCount()).toBe(before);

    // Up to the limit itself is accepted on every path.
    expect(await failureOf(`SELECT ${db.s}.add_job('square', $1)`, [JSON.stringify(payloadOf(1500))])).toBeNull();
    expect(await failureOf(`SELECT ${db.s}.add_jobs($1)`, [JSON.stringify(bulk.filter((j) => j.task !== 'big'))])).toBeNull();
    expect(await failureOf(`INSERT INTO ${db.s}.jobs (task, payload) VALUES ('raw', $1)`, [JSON.stringify(payloadOf(1500))])).toBeNull();
    expect(await jobCount()).toBe(before + 4);
  });

  it('is read by each client once and checked before a payload is sent; the database stays the judge', async () => {
    await setLimit(2000);
    const client = createClient({ connectionString: db.url, schema: db.schema });
    try {
      expect(await client.addJob('square', payloadOf(1500))).toMatch(/^\d+$/);
      const before = await jobCount();
      const err = await client.addJobs([{ task: 'square' }, { task: 'big', payload: payloadOf(3000) }]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(GrapevineError);
      expect((err as GrapevineError).code).toBe('GRAPEVINE_PAYLOAD_INVALID');
      expect((err as Error).message).toMatch(
        new RegExp(`payload of task "big" is \\d+ bytes, over the 2000-byte limit of schema "${db.schema}": `),
      );
      expect((err as Error).message).toContain(`UPDATE ${db.schema}.settings SET max_payload_bytes = ...`);
      expect(await jobCount()).toBe(before);

      // Raised above the old client-side constant: payloads up to the new limit go in.
      await setLimit(3 * 1024 * 1024);
      const raised = createClient({ connectionString: db.url, schema: db.schema });
      try {
        expect(await raised.addJob('square', payloadOf(2 * 1024 * 1024))).toMatch(/^\d+$/);
      } finally {
        await raised.close();
      }

      // Lowered after a client read it: the database refuses what the client let through.
      await setLimit(1500);
      const late = await client.addJob('square', payloadOf(1800)).catch((e: unknown) => e);
      expect((late as { code?: string }).code).toBe('54000');
      expect((late as Error).message).toMatch(/over the 1500-byte limit/);
    } finally {
      await client.close();
    }
  });

  it('can only be lowered by a client of its own (maxPayloadBytes)', async () => {
    await setLimit(5000);
    const client = createClient({ connectionString: db.url, schema: db.schema, maxPayloadBytes: 100 });
    try {
      const err = await client.addJob('square', payloadOf(200)).catch((e: unknown) => e);
      expect((err as GrapevineError).code).toBe('GRAPEVINE_PAYLOAD_INVALID');
      expect((err as Error).message).toMatch(
        /over the 100-byte limit set by maxPayloadBytes: store large data elsewhere and pass a reference, or raise maxPayloadBytes$/,
      );
    } finally {
      await client.close();
    }
  });
});
