import { describe, expect, it } from 'vitest';
import { statementName } from '../../src/sql/statement.ts';

describe('statementName', () => {
  it('keeps the schema in the name while the name fits in 63 bytes', () => {
    expect(statementName('grapevine', 'claim_next')).toBe('grapevine:grapevine:claim_next');
  });

  it('puts a short hash of a long schema in its place, so no name is cut and schemas stay apart', () => {
    const a = statementName('t_prod_systemd_394379', 'control_prune_log_per_supervisor');
    const b = statementName('t_prod_systemd_394380', 'control_prune_log_per_supervisor');
    expect(Buffer.byteLength(a)).toBeLessThanOrEqual(63);
    expect(a).toMatch(/^grapevine:[0-9a-f]{12}:control_prune_log_per_supervisor$/);
    expect(a).not.toBe(b);
    expect(statementName('t_prod_systemd_394379', 'control_prune_log_per_supervisor')).toBe(a);
  });

  it('refuses a statement name too long for any schema', () => {
    expect(() => statementName('s', 'x'.repeat(60))).toThrow(/too long/);
  });
});
