import { quoteIdent } from '../schema/channels.ts';
import { perSchema, statement, type Statement } from './statement.ts';

/** The schema's settings (migration 0011): what the database enforces, read by clients once each. */
export interface SettingsStatements {
  payloadLimit: Statement;
}

export const settingsStatements: (schema: string) => SettingsStatements = perSchema((schema) => ({
  // No row: no limit (the insert trigger enforces none either).
  payloadLimit: statement(schema, 'max_payload', `SELECT max_payload_bytes FROM ${quoteIdent(schema)}.settings`),
}));
