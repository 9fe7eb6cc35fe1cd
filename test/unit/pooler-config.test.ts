import { afterEach, describe, expect, it } from 'vitest';
import { resolveListenUrl, resolvePreparedStatements } from '../../src/config.ts';

const MAIN = 'postgres://app@pgbouncer:6432/app';
const saved = { listen: process.env.GRAPEVINE_LISTEN_URL, prepared: process.env.GRAPEVINE_PREPARED_STATEMENTS };
afterEach(() => {
  for (const [name, value] of [
    ['GRAPEVINE_LISTEN_URL', saved.listen],
    ['GRAPEVINE_PREPARED_STATEMENTS', saved.prepared],
  ] as const) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

describe('listenUrl', () => {
  it('is the option, else GRAPEVINE_LISTEN_URL, else the main connection string', () => {
    delete process.env.GRAPEVINE_LISTEN_URL;
    expect(resolveListenUrl(undefined, MAIN)).toBe(MAIN);
    process.env.GRAPEVINE_LISTEN_URL = 'postgres://app@db:5432/app';
    expect(resolveListenUrl(undefined, MAIN)).toBe('postgres://app@db:5432/app');
    expect(resolveListenUrl('postgresql://app@primary/app', MAIN)).toBe('postgresql://app@primary/app');
  });

  it('refuses what is not a PostgreSQL URL, naming the option and never the password', () => {
    for (const bad of ['db:5432', 'http://db/app', 'postgres:/db', '']) {
      expect(() => resolveListenUrl(bad, MAIN)).toThrow(
        expect.objectContaining({ code: 'GRAPEVINE_CONFIG_INVALID', message: expect.stringMatching(/^listenUrl/) }),
      );
    }
    try {
      resolveListenUrl('postgres//app:s3cret@db/app', MAIN);
      expect.unreachable();
    } catch (err) {
      expect((err as Error).message).not.toContain('s3cret');
    }
  });
});

describe('preparedStatements', () => {
  it('is the option, else GRAPEVINE_PREPARED_STATEMENTS, else true', () => {
    delete process.env.GRAPEVINE_PREPARED_STATEMENTS;
    expect(resolvePreparedStatements(undefined)).toBe(true);
    process.env.GRAPEVINE_PREPARED_STATEMENTS = 'false';
    expect(resolvePreparedStatements(undefined)).toBe(false);
    expect(resolvePreparedStatements(true)).toBe(true);
  });

  it('refuses anything but true and false', () => {
    process.env.GRAPEVINE_PREPARED_STATEMENTS = 'off';
    expect(() => resolvePreparedStatements(undefined)).toThrow(/GRAPEVINE_PREPARED_STATEMENTS\) must be true or false, got "off"/);
    expect(() => resolvePreparedStatements('no' as unknown as boolean)).toThrow(/must be true or false/);
  });
});
