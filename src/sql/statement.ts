/**
 * A named statement: pg prepares it once per connection and reuses the plan.
 * The schema is part of the name because a statement prepared for one schema
 * must never be reused for another on a shared connection.
 */
export interface Statement {
  name: string;
  text: string;
}

export function statement(schema: string, name: string, text: string): Statement {
  return { name: `grapevine:${schema}:${name}`, text };
}

export function withValues(st: Statement, values: unknown[]): { name: string; text: string; values: unknown[] } {
  return { name: st.name, text: st.text, values };
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
