import { createHash } from 'node:crypto';
import { rowsOf, type Queryable, type TypedQuery } from '../db.ts';

/**
 * A named statement: pg prepares it once per connection and reuses the plan.
 * The schema is part of the name because a statement prepared for one schema
 * must never be reused for another on a shared connection. Pools made with
 * preparedStatements: false send it unnamed (createPool in src/db.ts).
 */
export interface Statement {
  name: string;
  text: string;
}

export function statement(schema: string, name: string, text: string): Statement {
  return { name: statementName(schema, name), text };
}

/** PostgreSQL cuts a prepared statement's name at 63 bytes, and two names cut alike would share one plan. */
const MAX_NAME_BYTES = 63;

/**
 * `grapevine:<schema>:<name>`, or with a long schema a short hash of it in
 * its place, so that no name is cut and names stay distinct per schema.
 */
export function statementName(schema: string, name: string): string {
  const full = `grapevine:${schema}:${name}`;
  if (Buffer.byteLength(full) <= MAX_NAME_BYTES) return full;
  const short = `grapevine:${createHash('sha256').update(schema).digest('hex').slice(0, 12)}:${name}`;
  if (Buffer.byteLength(short) > MAX_NAME_BYTES)
    throw new Error(`statement name ${JSON.stringify(name)} is too long: keep it under ${MAX_NAME_BYTES - 23} bytes`);
  return short;
}

/**
 * Builds a family of statements once per schema and hands back the same
 * objects afterwards, so statement names stay stable for pg's prepared-plan
 * cache.
 */
export function perSchema<T>(build: (schema: string) => T): (schema: string) => T {
  const cache = new Map<string, T>();
  return (schema) => {
    let found = cache.get(schema);
    if (found === undefined) {
      found = build(schema);
      cache.set(schema, found);
    }
    return found;
  };
}

/**
 * The statement with its parameters in the order its text numbers them. Only
 * the typed functions of src/sql/ call this: they alone know that order and
 * the rows `R` the statement answers with.
 */
export function bind<R>(st: Statement, values: unknown[]): TypedQuery<R> {
  return { name: st.name, text: st.text, values };
}

/** For statements that always answer with exactly one row: a SELECT without FROM, an INSERT of one row with RETURNING. */
export async function oneRow<R>(db: Queryable, query: TypedQuery<R>): Promise<R> {
  return (await rowsOf(db, query))[0];
}

/** How many rows a statement changed (an INSERT, UPDATE or DELETE without RETURNING). */
export async function changed(db: Queryable, query: TypedQuery<never>): Promise<number> {
  return (await db.query(query)).rowCount ?? 0;
}

/**
 * A bigint[] parameter written as an array literal: ids and tokens are
 * decimal digits, and pg's general array encoder quotes and escapes every
 * element.
 */
export function bigintArray(ids: readonly string[]): string {
  return `{${ids.join(',')}}`;
}
