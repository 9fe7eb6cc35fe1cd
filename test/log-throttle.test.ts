import { describe, expect, it } from 'vitest';
import { throttledWarnings } from '../src/log.ts';
import { capturingLogger } from './helpers/logs.ts';

describe('throttled warnings', () => {
  it('throttle each message on its own: a burst of one does not hide the first of another', () => {
    const { logger, lines } = capturingLogger('warn');
    // An interval no test run reaches, so the outcome does not depend on timing.
    const warn = throttledWarnings(3_600_000);
    warn(logger, { err: 'connection reset' }, "a claim's commit failed; its jobs may run again from the table");
    warn(logger, { err: 'connection reset' }, "a claim's commit failed; its jobs may run again from the table");
    warn(logger, { err: 'read-only transaction' }, 'claim failed; will retry from the table');
    warn(logger, { err: 'read-only transaction' }, 'claim failed; will retry from the table');
    expect(lines().map((l) => [l.msg, l.err, l.suppressed])).toEqual([
      ["a claim's commit failed; its jobs may run again from the table", 'connection reset', 0],
      ['claim failed; will retry from the table', 'read-only transaction', 0],
    ]);
  });
});
