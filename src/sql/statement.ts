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
