import { describe, expect, it } from 'vitest';
import { isDataError, oncePerJob, refusedOutcomeText, retryFirst, unstorableResult } from '../../threads/outcomes.ts';

const p = (id: string, token: string, settled?: boolean) => ({ outcome: { id, token }, settled });

describe('oncePerJob', () => {
  it("sends each job's first outcome to the delete and leaves later ones (stale claims) to the fenced complete", () => {
    const items = [p('1', 'a'), p('2', 'b'), p('1', 'c'), p('3', 'd'), p('1', 'e')];
    const { once, repeats } = oncePerJob(items);
    expect(once.map((x) => x.outcome.token)).toEqual(['a', 'b', 'd']);
    expect(repeats.map((x) => x.outcome.token)).toEqual(['c', 'e']);
  });

  it('keeps every item, each exactly once, and the same objects', () => {
    const items = Array.from({ length: 50 }, (_, i) => p(String(i % 7), String(i)));
    const { once, repeats } = oncePerJob(items);
    expect(once).toHaveLength(7);
    expect(new Set(once.map((x) => x.outcome.id)).size).toBe(7);
    expect([...once, ...repeats].sort((x, y) => Number(x.outcome.token) - Number(y.outcome.token))).toEqual(items);
    expect(once[0]).toBe(items[0]);
  });

  it('has nothing to split in an empty batch', () => {
    expect(oncePerJob([])).toEqual({ once: [], repeats: [] });
  });
});

describe('retryFirst', () => {
  it("puts a failed write's unsettled outcomes back ahead of those that queued up meanwhile, dropping settled ones", () => {
    const failed = [p('1', 'a'), p('2', 'b', true), p('3', 'c', false)];
    const queued = [p('4', 'd')];
    expect(retryFirst(failed, queued).map((x) => x.outcome.id)).toEqual(['1', '3', '4']);
  });

  it('leaves the queue as it was when everything failed had been settled', () => {
    const queued = [p('4', 'd'), p('5', 'e')];
    expect(retryFirst([p('1', 'a', true)], queued)).toEqual(queued);
  });
});

describe('isDataError', () => {
  const pgError = (code: string) => Object.assign(new Error('refused'), { code });

  it('takes data exceptions, integrity violations and program limits for a value refused, which a retry would not change', () => {
    for (const code of ['22P05', '22021', '22P02', '22023', '22003', '22001', '23514', '54000', '54001'])
      expect(isDataError(pgError(code)), code).toBe(true);
    expect(isDataError(new RangeError('Invalid string length'))).toBe(true);
  });

  it('leaves connection errors, timeouts, serialization failures and errors without a code to the retry', () => {
    for (const code of ['08006', '57P01', '57014', '40001', '53300', 'ECONNRESET', 'XX000'])
      expect(isDataError(pgError(code)), code).toBe(false);
    expect(isDataError(new Error('Connection terminated unexpectedly'))).toBe(false);
    expect(isDataError(null)).toBe(false);
    expect(isDataError('22P05')).toBe(false);
  });
});

describe('refusedOutcomeText', () => {
  it("names the field, PostgreSQL's code, message and detail, and says the job failed without a retry", () => {
    const refusal = Object.assign(new Error('unsupported Unicode escape sequence'), {
      code: '22P05',
      detail: '\\u0000 cannot be converted to text.',
    });
    expect(refusedOutcomeText('success', refusal)).toBe(
      "GrapevineError [GRAPEVINE_RESULT_UNSTORABLE]: the job's result could not be stored, PostgreSQL refused it with 22P05: " +
        'unsupported Unicode escape sequence (\\u0000 cannot be converted to text.); this description replaces it, and the job failed without a retry',
    );
    expect(refusedOutcomeText('failure', refusal)).toMatch(
      /^GrapevineError \[GRAPEVINE_ERROR_UNSTORABLE\]: the job's error could not be stored, PostgreSQL/,
    );
  });

  it('names an error raised before anything was sent, and stays short and storable whatever the detail quotes', () => {
    expect(refusedOutcomeText('success', new RangeError('Invalid string length'))).toContain(
      "the job's result could not be stored, RangeError: Invalid string length;",
    );
    const text = refusedOutcomeText(
      'success',
      Object.assign(new Error('invalid input syntax for type json'), {
        code: '22P02',
        detail: `Token "${'\u0000'.repeat(5000)}" is invalid.`,
      }),
    );
    expect(text.length).toBeLessThan(2_100);
    expect(text).not.toContain('\u0000');
  });
});

describe('unstorableResult', () => {
  const MiB = 1_048_576;

  it('passes ordinary JSON, escaped control characters, emoji and escaped surrogate pairs', () => {
    for (const value of [{ a: 1 }, 'tab\there \u0001', 'emoji \u{1F600}', ['\\u0000 as text', 'a backslash \\']]) {
      expect(unstorableResult(JSON.stringify(value), MiB), JSON.stringify(value)).toBeNull();
    }
    expect(unstorableResult('"\\ud83d\\ude00"', MiB)).toBeNull();
  });

  it('names a NUL character and a lone surrogate, high or low', () => {
    expect(unstorableResult(JSON.stringify({ a: 'x\u0000' }), MiB)).toMatch(
      /^GrapevineError \[GRAPEVINE_RESULT_UNSTORABLE\]: the result holds a NUL character/,
    );
    expect(unstorableResult(JSON.stringify(['\ud83d']), MiB)).toMatch(/a lone UTF-16 surrogate \(\\ud83d without its other half/);
    expect(unstorableResult(JSON.stringify('\ude00 first'), MiB)).toMatch(/a lone UTF-16 surrogate \(\\ude00/);
    // An escaped backslash before "u0000" is text; the NUL after it is not.
    expect(unstorableResult(JSON.stringify('\\u0000\u0000'), MiB)).toMatch(/NUL character/);
  });

  it('counts bytes, not characters, against maxResultBytes', () => {
    expect(unstorableResult(JSON.stringify('x'.repeat(98)), 100)).toBeNull();
    expect(unstorableResult(JSON.stringify('x'.repeat(99)), 100)).toMatch(
      /^GrapevineError \[GRAPEVINE_RESULT_TOO_LARGE\]: the result is 101 bytes of JSON, over maxResultBytes \(100 bytes\)/,
    );
    // 34 characters of JSON, 3 bytes each inside the quotes: 98 bytes.
    expect(unstorableResult(JSON.stringify('\u20ac'.repeat(32)), 100)).toBeNull();
    expect(unstorableResult(JSON.stringify('\u20ac'.repeat(33)), 100)).toMatch(/the result is 101 bytes/);
  });
});
