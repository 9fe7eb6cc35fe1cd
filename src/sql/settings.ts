import { rowsOf, type Queryable } from '../db.ts';
import { quoteIdent } from '../schema/channels.ts';
import { bind, perSchema, statement, type Statement } from './statement.ts';

/** The schema's settings (migration 0011): what the database enforces, read by clients once each. */
interface SettingsStatements {
  payloadLimit: Statement;
}

const settingsStatements: (schema: string) => SettingsStatements = perSchema((schema) => ({
  // No row: no limit (the insert trigger enforces none either).
  payloadLimit: statement(schema, 'max_payload', `SELECT max_payload_bytes FROM ${quoteIdent(schema)}.settings`),
}));

/** The schema's payload limit in bytes, or null when it sets none. */
export async function payloadLimit(db: Queryable, schema: string): Promise<number | null> {
  const rows = await rowsOf<{ max_payload_bytes: number }>(db, bind(settingsStatements(schema).payloadLimit, []));
  return rows[0]?.max_payload_bytes ?? null;
}
