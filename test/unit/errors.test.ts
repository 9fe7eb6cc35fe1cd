import { describe, expect, it } from 'vitest';
import { formatStoredError, GrapevineError, serializeError, stackFrames } from '../../src/errors.ts';

describe('serializeError', () => {
  it('keeps name, message, stack and a string code of an Error', () => {
    const err = Object.assign(new TypeError('bad input'), { code: 'E_INPUT' });
    const s = serializeError(err);
    expect(s).toEqual({ name: 'TypeError', message: 'bad input', stack: err.stack, code: 'E_INPUT' });
    expect(s.stack).toMatch(/^TypeError: bad input\n\s+at /);
  });

  it("keeps a GrapevineError's stable code", () => {
    expect(serializeError(new GrapevineError('GRAPEVINE_JOB_TIMEOUT', 'too slow'))).toMatchObject({
      name: 'GrapevineError',
      code: 'GRAPEVINE_JOB_TIMEOUT',
      message: 'too slow',
    });
  });

  it('drops a code that is not a string (a number, an object), and a missing stack', () => {
    const err = Object.assign(new Error('x'), { code: 42 });
    err.stack = undefined;
    expect(serializeError(err)).toEqual({ name: 'Error', message: 'x', stack: undefined, code: undefined });
  });

  it.each([
    [null, 'null was thrown'],
    [undefined, 'undefined was thrown'],
    ['plain text', 'plain text'],
    [42, 'non-Error thrown: 42'],
    [{ reason: 'nope' }, 'non-Error thrown: {"reason":"nope"}'],
    [[1, 'two'], 'non-Error thrown: [1,"two"]'],
  ])('describes a thrown non-Error %j as NonErrorThrown', (thrown, message) => {
    expect(serializeError(thrown)).toEqual({ name: 'NonErrorThrown', message });
  });

  it('describes a value JSON cannot hold (a cycle, a bigint) with String()', () => {
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(serializeError(cyclic)).toEqual({ name: 'NonErrorThrown', message: 'non-Error thrown: [object Object]' });
    expect(serializeError(10n)).toEqual({ name: 'NonErrorThrown', message: 'non-Error thrown: 10' });
  });

  it('still answers for a value whose JSON and string forms both throw', () => {
    const hostile = {
      toJSON() {
        throw new Error('no JSON');
      },
      toString() {
        throw new Error('no string');
      },
    };
    expect(serializeError(hostile)).toEqual({ name: 'NonErrorThrown', message: 'unprintable value thrown' });
    expect(serializeError(Object.create(null))).toEqual({ name: 'NonErrorThrown', message: 'non-Error thrown: {}' });
  });

  it('still answers for a Proxy that throws on every access', () => {
    const trap = () => {
      throw new Error('trap');
    };
    const proxy = new Proxy({}, { get: trap, getPrototypeOf: trap, has: trap, ownKeys: trap, getOwnPropertyDescriptor: trap });
    const s = serializeError(proxy);
    expect(s.name).toBe('NonErrorThrown');
    expect(typeof s.message).toBe('string');
  });

  it('falls back for an Error whose name, message and stack getters throw', () => {
    const err = new Error('hidden');
    for (const key of ['name', 'message', 'stack', 'code']) {
      Object.defineProperty(err, key, {
        get() {
          throw new Error(`no ${key}`);
        },
      });
    }
    expect(serializeError(err)).toEqual({
      name: 'Error',
      message: '(the error message could not be read)',
      stack: undefined,
      code: undefined,
    });
  });

  it('turns a non-string message or name into text', () => {
    const err = new Error('x');
    Object.defineProperty(err, 'message', { value: 404 });
    Object.defineProperty(err, 'name', { value: null });
    expect(serializeError(err)).toMatchObject({ name: 'null', message: '404' });
  });

  it('keeps the chain of causes, each serialised like the error itself', () => {
    const root = Object.assign(new Error('connection refused'), { code: 'ECONNREFUSED' });
    const wrapped = new Error('could not charge the card', { cause: new TypeError('bad response', { cause: root }) });
    const s = serializeError(wrapped);
    expect(s).toMatchObject({
      message: 'could not charge the card',
      cause: { name: 'TypeError', message: 'bad response', cause: { message: 'connection refused', code: 'ECONNREFUSED' } },
    });
    expect(s.cause?.cause?.cause).toBeUndefined();
    expect(s.cause?.stack).toMatch(/^TypeError: bad response\n/);
  });

  it('keeps a cause that is not an Error, and leaves out an empty one', () => {
    expect(serializeError(new Error('x', { cause: 'the lock was taken' })).cause).toEqual({
      name: 'NonErrorThrown',
      message: 'the lock was taken',
    });
    expect(serializeError(new Error('x', { cause: { retryIn: 5 } })).cause).toEqual({
      name: 'NonErrorThrown',
      message: 'non-Error thrown: {"retryIn":5}',
    });
    expect(serializeError(new Error('x', { cause: undefined }))).not.toHaveProperty('cause');
    expect(serializeError(new Error('x', { cause: null }))).not.toHaveProperty('cause');
  });

  it('stops where a cycle of causes comes back round', () => {
    const a = new Error('a');
    const b = new Error('b', { cause: a });
    (a as { cause?: unknown }).cause = b;
    const s = serializeError(a);
    expect(s.message).toBe('a');
    expect(s.cause?.message).toBe('b');
    expect(s.cause?.cause).toBeUndefined();
    const self = new Error('self');
    (self as { cause?: unknown }).cause = self;
    expect(serializeError(self)).not.toHaveProperty('cause');
  });

  it('keeps at most eight causes of a chain built in a loop, the nearest ones', () => {
    let deep: Error = new Error('root');
    for (let i = 0; i < 10_000; i++) deep = new Error(`level ${i}`, { cause: deep });
    const s = serializeError(deep);
    const messages: string[] = [];
    for (let c: typeof s | undefined = s; c; c = c.cause) messages.push(c.message);
    expect(messages).toEqual([
      'level 9999',
      'level 9998',
      'level 9997',
      'level 9996',
      'level 9995',
      'level 9994',
      'level 9993',
      'level 9992',
      'level 9991',
    ]);
  });

  it('survives a cause getter that throws', () => {
    const err = new Error('outer');
    Object.defineProperty(err, 'cause', {
      get() {
        throw new Error('no cause for you');
      },
    });
    expect(serializeError(err)).toEqual({ name: 'Error', message: 'outer', stack: err.stack, code: undefined });
  });

  it('makes message, stack and thrown values storable: NUL and lone surrogates become U+FFFD, and long texts are cut', () => {
    const err = new Error('bad \u0000 byte and half an emoji \ud83d');
    const s = serializeError(err);
    expect(s.message).toBe('bad \ufffd byte and half an emoji \ufffd');
    expect(s.stack).toMatch(/^Error: bad \ufffd byte and half an emoji \ufffd\n\s+at /);
    expect(serializeError('thrown \udc00').message).toBe('thrown \ufffd');
    const long = serializeError(new Error('x'.repeat(100_000)));
    expect(long.message.length).toBeLessThanOrEqual(8_192);
    expect(long.message.endsWith('…')).toBe(true);
    expect(long.stack!.length).toBeLessThanOrEqual(16_384);
  });

  it('gives a plain-data result that survives structured cloning between threads', () => {
    const s = serializeError(Object.assign(new Error('m', { cause: new Error('c') }), { code: 'E' }));
    expect(structuredClone(s)).toEqual(s);
    expect(Object.keys(s).sort()).toEqual(['cause', 'code', 'message', 'name', 'stack']);
  });
});

describe('formatStoredError', () => {
  it('is "Name: message" followed by the frames, without repeating the stack\'s own first line', () => {
    const text = formatStoredError({ name: 'Error', message: 'boom', stack: 'Error: boom\n    at a (x.js:1:1)\n    at b (y.js:2:2)' });
    expect(text).toBe('Error: boom\n    at a (x.js:1:1)\n    at b (y.js:2:2)');
  });

  it('puts the code in brackets after the name', () => {
    expect(formatStoredError({ name: 'GrapevineError', code: 'GRAPEVINE_CANCELLED', message: 'cancelled' })).toBe(
      'GrapevineError [GRAPEVINE_CANCELLED]: cancelled',
    );
  });

  it('is the head alone for a stack without frames or no stack', () => {
    expect(formatStoredError({ name: 'E', message: 'm', stack: 'E: m' })).toBe('E: m');
    expect(formatStoredError({ name: 'NonErrorThrown', message: 'null was thrown' })).toBe('NonErrorThrown: null was thrown');
  });

  it('puts each cause below the error, on a line of its own starting "Caused by:"', () => {
    const text = formatStoredError({
      name: 'Error',
      message: 'could not charge',
      stack: 'Error: could not charge\n    at charge (pay.js:1:1)',
      cause: {
        name: 'Error',
        code: 'ECONNREFUSED',
        message: 'refused',
        stack: 'Error: refused\n    at connect (net.js:2:2)',
        cause: { name: 'NonErrorThrown', message: 'the lock was taken' },
      },
    });
    expect(text).toBe(
      'Error: could not charge\n    at charge (pay.js:1:1)\nCaused by: Error [ECONNREFUSED]: refused\n    at connect (net.js:2:2)\nCaused by: NonErrorThrown: the lock was taken',
    );
  });

  it('keeps a multi-line message whole, taking the frames from the stack', () => {
    const err = new Error('line one\nline two');
    const text = formatStoredError(serializeError(err));
    expect(text.startsWith('Error: line one\nline two')).toBe(true);
  });
});

describe('stackFrames', () => {
  it("is everything from the first line break, or '' for no stack or a one-line stack", () => {
    expect(stackFrames('Error: x\n    at f')).toBe('\n    at f');
    expect(stackFrames('Error: x')).toBe('');
    expect(stackFrames('')).toBe('');
    expect(stackFrames(undefined)).toBe('');
  });
});
