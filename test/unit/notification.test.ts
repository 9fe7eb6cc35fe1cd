import { describe, expect, it } from 'vitest';
import { isAddressedTo, parseControlNotification, parseJobNotification, rangesContain, takeIds } from '../../src/notification.ts';

describe('parseJobNotification', () => {
  it('reads single ids and ranges, and counts the ids they name', () => {
    expect(parseJobNotification('12,15-19,40')).toEqual({
      kind: 'ids',
      ranges: [
        { first: 12, last: 12 },
        { first: 15, last: 19 },
        { first: 40, last: 40 },
      ],
      count: 7,
    });
  });

  it('reads a due time', () => {
    expect(parseJobNotification('at:1765000000000')).toEqual({ kind: 'due-at', at: 1765000000000 });
  });

  it('reads a change of the schedules table, exactly as spelled', () => {
    expect(parseJobNotification('schedules')).toEqual({ kind: 'schedules' });
    expect(parseJobNotification('schedules ').kind).toBe('malformed');
  });

  it('keeps a huge range as one range, counted without expanding it', () => {
    const parsed = parseJobNotification('1-9007199254740991');
    expect(parsed).toEqual({ kind: 'ids', ranges: [{ first: 1, last: 9007199254740991 }], count: 9007199254740991 });
  });

  it.each([
    ['', 'empty payload'],
    ['x'.repeat(8_001), 'payload too long'],
    ['at:', 'bad due time'],
    ['at:soon', 'bad due time'],
    ['at:-5', 'bad due time'],
    ['at:0', 'bad due time'],
    ['at:1.5', 'bad due time'],
    ['at:99999999999999999999', 'bad due time'],
  ])('reports %j as malformed (%s), never throws', (payload, reason) => {
    expect(parseJobNotification(payload)).toEqual({ kind: 'malformed', reason });
  });

  it.each([
    ['0'],
    ['007'],
    ['-5'],
    ['5-'],
    ['1,,2'],
    ['1,'],
    [',1'],
    ['1 ,2'],
    ['1e3'],
    ['0x10'],
    ['１２'],
    ['1-2-3'],
    ['12345678901234567'],
    ['DROP TABLE jobs'],
  ])('reports the bad id in %j as malformed', (payload) => {
    const parsed = parseJobNotification(payload);
    expect(parsed.kind).toBe('malformed');
    if (parsed.kind === 'malformed') expect(parsed.reason).toMatch(/^bad id /);
  });

  it('rejects ranges that run backwards or past the safe integers', () => {
    expect(parseJobNotification('19-15')).toEqual({ kind: 'malformed', reason: 'bad id range "19-15"' });
    expect(parseJobNotification('9007199254740992')).toEqual({ kind: 'malformed', reason: 'bad id range "9007199254740992"' });
    expect(parseJobNotification('1-9999999999999999')).toMatchObject({ kind: 'malformed', reason: 'bad id range "1-9999999999999999"' });
  });

  it('quotes at most 40 characters of a bad token in its reason', () => {
    const parsed = parseJobNotification(`1,${'9'.repeat(30)}x${'9'.repeat(30)}`);
    expect(parsed.kind).toBe('malformed');
    if (parsed.kind === 'malformed') expect(parsed.reason).toBe(`bad id ${JSON.stringify(`${'9'.repeat(30)}x${'9'.repeat(9)}`)}`);
  });

  it('is malformed as a whole when one token of many is bad', () => {
    expect(parseJobNotification('1,2,3,oops,5').kind).toBe('malformed');
  });

  it('takes a payload of exactly the longest accepted length, and not one character more', () => {
    const longest = Array.from({ length: 2_667 }, () => '10').join(',');
    expect(longest.length).toBe(8_000);
    expect(parseJobNotification(longest)).toMatchObject({ kind: 'ids', count: 2_667 });
    expect(parseJobNotification(`${longest}0`)).toEqual({ kind: 'malformed', reason: 'payload too long' });
  });

  it('says malformed for a value that is not a string at all', () => {
    expect(parseJobNotification(undefined as unknown as string)).toEqual({ kind: 'malformed', reason: 'empty payload' });
    expect(parseJobNotification(42 as unknown as string)).toEqual({ kind: 'malformed', reason: 'empty payload' });
  });
});

describe('rangesContain', () => {
  const ranges = [
    { first: 12, last: 12 },
    { first: 15, last: 19 },
  ];

  it('finds ids at both ends and inside a range, and nothing between or beyond', () => {
    expect([11, 12, 13, 14, 15, 17, 19, 20].map((id) => rangesContain(ranges, id))).toEqual([
      false,
      true,
      false,
      false,
      true,
      true,
      true,
      false,
    ]);
  });

  it('holds a huge range without expanding it', () => {
    expect(rangesContain([{ first: 1, last: Number.MAX_SAFE_INTEGER }], Number.MAX_SAFE_INTEGER)).toBe(true);
  });

  it('contains nothing when there are no ranges', () => {
    expect(rangesContain([], 1)).toBe(false);
  });
});

describe('takeIds', () => {
  it('takes ids in order across ranges, up to the limit', () => {
    const ranges = [
      { first: 3, last: 5 },
      { first: 9, last: 9 },
      { first: 20, last: 22 },
    ];
    expect(takeIds(ranges, 100)).toEqual([3, 4, 5, 9, 20, 21, 22]);
    expect(takeIds(ranges, 4)).toEqual([3, 4, 5, 9]);
    expect(takeIds(ranges, 2)).toEqual([3, 4]);
  });

  it('takes nothing for a limit of zero or less', () => {
    expect(takeIds([{ first: 1, last: 10 }], 0)).toEqual([]);
    expect(takeIds([{ first: 1, last: 10 }], -1)).toEqual([]);
  });

  it('takes the first ids of a hostile huge range without expanding the rest', () => {
    expect(takeIds([{ first: 1, last: Number.MAX_SAFE_INTEGER }], 3)).toEqual([1, 2, 3]);
    const top = Number.MAX_SAFE_INTEGER;
    expect(takeIds([{ first: top - 1, last: top }], 10)).toEqual([top - 1, top]);
  });

  it('round-trips with the parser', () => {
    const parsed = parseJobNotification('7,100-102');
    expect(parsed.kind).toBe('ids');
    if (parsed.kind === 'ids') expect(takeIds(parsed.ranges, parsed.count)).toEqual([7, 100, 101, 102]);
  });
});

describe('parseControlNotification', () => {
  it('reads a cancel for one supervisor and tells whom it concerns', () => {
    const cancel = parseControlNotification('{"type":"cancel","job":"42","to":"host-a1"}');
    expect(cancel).toEqual({ kind: 'cancel', job: '42', to: 'host-a1' });
    expect(isAddressedTo(cancel, 'host-a1')).toBe(true);
    expect(isAddressedTo(cancel, 'host-b2')).toBe(false);
  });

  it('reads a cancel that names no owner as addressed to nobody', () => {
    const cancel = parseControlNotification('{"type":"cancel","job":"42","to":7}');
    expect(cancel).toEqual({ kind: 'cancel', job: '42', to: null });
    expect(isAddressedTo(cancel, 'host-a1')).toBe(false);
  });

  it('reads a message wake-up for named recipients, or for everyone when it names none', () => {
    const named = parseControlNotification('{"type":"message","id":"9","to":["host-a1","host-c3",5]}');
    expect(named).toEqual({ kind: 'message', to: ['host-a1', 'host-c3'] });
    expect(isAddressedTo(named, 'host-a1')).toBe(true);
    expect(isAddressedTo(named, 'host-b2')).toBe(false);
    const everyone = parseControlNotification('{"type":"message","id":"9","to":null}');
    expect(everyone).toEqual({ kind: 'message', to: null });
    expect(isAddressedTo(everyone, 'host-b2')).toBe(true);
  });

  it('reports what it cannot read instead of throwing', () => {
    expect(parseControlNotification('not json')).toEqual({ kind: 'malformed', reason: 'not JSON' });
    expect(parseControlNotification('null')).toEqual({ kind: 'malformed', reason: 'unknown message' });
    expect(parseControlNotification('{"type":"cancel"}')).toEqual({ kind: 'malformed', reason: 'unknown message' });
    expect(parseControlNotification('{"type":"launch"}')).toEqual({ kind: 'malformed', reason: 'unknown message' });
    expect(isAddressedTo(parseControlNotification('[]'), 'host-a1')).toBe(false);
  });
});
