import { describe, expect, it } from 'vitest';
import { parseSchedule, type MissedTicks, type Schedule } from '../../src/schedule/schedule.ts';
import { dueTicks, LATE_TICK_MS, latestTick, nextTicks, ticksBetween } from '../../src/schedule/ticks.ts';

const HOUR = 3_600_000;
const iso = (ticks: Date[]): string[] => ticks.map((tick) => tick.toISOString());
const at = (text: string): Date => new Date(text);

function schedule(cron: string, tz = 'UTC', missed: MissedTicks = 'skip'): Schedule {
  return parseSchedule({ name: 'nightly', cron, task: 'report', tz, missed });
}

/** The wall clock of `tick` in `tz`, as YYYY-MM-DD HH:MM:SS. */
function wallClock(tick: Date, tz: string): string {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone: tz,
    hourCycle: 'h23',
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  }).formatToParts(tick);
  const get = (type: string): string => parts.find((part) => part.type === type)!.value;
  return `${get('year')}-${get('month')}-${get('day')} ${get('hour')}:${get('minute')}:${get('second')}`;
}

describe('nextTicks', () => {
  const hourly = schedule('0 * * * *');

  it('returns ticks strictly after the given instant: a tick itself is not after itself', () => {
    expect(iso(nextTicks(hourly, at('2025-01-01T10:00:00.000Z'), 2))).toEqual(['2025-01-01T11:00:00.000Z', '2025-01-01T12:00:00.000Z']);
    expect(iso(nextTicks(hourly, at('2025-01-01T09:59:59.999Z'), 1))).toEqual(['2025-01-01T10:00:00.000Z']);
  });

  it('returns whole-second instants after an instant with milliseconds', () => {
    expect(iso(nextTicks(schedule('* * * * * *'), at('2025-01-01T10:00:00.500Z'), 2))).toEqual([
      '2025-01-01T10:00:01.000Z',
      '2025-01-01T10:00:02.000Z',
    ]);
  });

  it('returns nothing for a count of 0, and refuses a bad count or instant', () => {
    expect(nextTicks(hourly, at('2025-01-01T10:00:00Z'), 0)).toEqual([]);
    expect(() => nextTicks(hourly, at('2025-01-01T10:00:00Z'), -1)).toThrow(RangeError);
    expect(() => nextTicks(hourly, at('2025-01-01T10:00:00Z'), 1.5)).toThrow(RangeError);
    expect(() => nextTicks(hourly, new Date('not a date'), 1)).toThrow(TypeError);
  });
});

describe('ticksBetween', () => {
  const hourly = schedule('0 * * * *');

  it('includes a tick at `from` and excludes one at `to`', () => {
    expect(iso(ticksBetween(hourly, at('2025-01-01T10:00:00Z'), at('2025-01-01T13:00:00Z'), 10))).toEqual([
      '2025-01-01T10:00:00.000Z',
      '2025-01-01T11:00:00.000Z',
      '2025-01-01T12:00:00.000Z',
    ]);
  });

  it('stops at `limit` ticks, the earliest ones', () => {
    expect(iso(ticksBetween(hourly, at('2025-01-01T10:30:00Z'), at('2025-01-02T00:00:00Z'), 2))).toEqual([
      '2025-01-01T11:00:00.000Z',
      '2025-01-01T12:00:00.000Z',
    ]);
  });

  it('returns nothing when `to` is not after `from`', () => {
    expect(ticksBetween(hourly, at('2025-01-01T10:00:00Z'), at('2025-01-01T10:00:00Z'), 10)).toEqual([]);
  });
});

describe('daylight-saving days', () => {
  describe('a wall-clock time inside the hour that a spring-forward day skips runs when that hour ends', () => {
    it('America/New_York, 2025-03-09: 02:30 does not exist (02:00 EST becomes 03:00 EDT), so it runs at 03:00 EDT, once', () => {
      const ticks = nextTicks(schedule('30 2 * * *', 'America/New_York'), at('2025-03-08T00:00:00Z'), 3);
      expect(iso(ticks)).toEqual(['2025-03-08T07:30:00.000Z', '2025-03-09T07:00:00.000Z', '2025-03-10T06:30:00.000Z']);
      expect(ticks.map((tick) => wallClock(tick, 'America/New_York'))).toEqual([
        '2025-03-08 02:30:00',
        '2025-03-09 03:00:00',
        '2025-03-10 02:30:00',
      ]);
    });

    it('Europe/Berlin, 2025-03-30: 02:30 runs at 03:00 CEST, and so does a six-field 02:30:15', () => {
      const berlin = 'Europe/Berlin';
      expect(iso(nextTicks(schedule('30 2 * * *', berlin), at('2025-03-29T12:00:00Z'), 2))).toEqual([
        '2025-03-30T01:00:00.000Z',
        '2025-03-31T00:30:00.000Z',
      ]);
      expect(iso(nextTicks(schedule('15 30 2 * * *', berlin), at('2025-03-29T12:00:00Z'), 2))).toEqual([
        '2025-03-30T01:00:00.000Z',
        '2025-03-31T00:30:15.000Z',
      ]);
    });

    it('a list of wall-clock times is wall-clock too: 02:30 and 13:30 both run on the spring-forward day', () => {
      const ticks = ticksBetween(schedule('30 2,13 * * *', 'America/New_York'), at('2025-03-09T05:00:00Z'), at('2025-03-10T04:00:00Z'), 10);
      expect(ticks.map((tick) => wallClock(tick, 'America/New_York'))).toEqual(['2025-03-09 03:00:00', '2025-03-09 13:30:00']);
    });

    it('America/Santiago, 2025-09-07: midnight does not exist (00:00 becomes 01:00), so a midnight schedule runs at 01:00', () => {
      const ticks = nextTicks(schedule('0 0 * * *', 'America/Santiago'), at('2025-09-06T12:00:00Z'), 2);
      expect(ticks.map((tick) => wallClock(tick, 'America/Santiago'))).toEqual(['2025-09-07 01:00:00', '2025-09-08 00:00:00']);
    });

    it('an interval (a step or *) keeps its pace in real time and has no ticks in the skipped hour', () => {
      const ticks = ticksBetween(schedule('*/15 2 * * *', 'America/New_York'), at('2025-03-09T05:00:00Z'), at('2025-03-10T04:00:00Z'), 10);
      expect(ticks).toEqual([]);
    });
  });

  describe('a wall-clock time inside the hour that a fall-back day repeats runs once, at its first occurrence', () => {
    it('America/New_York, 2025-11-02: 01:30 happens at 05:30 UTC (EDT) and again at 06:30 UTC (EST); it fires at 05:30 only', () => {
      const nightly = schedule('30 1 * * *', 'America/New_York');
      const day = ticksBetween(nightly, at('2025-11-02T04:00:00Z'), at('2025-11-03T05:00:00Z'), 10);
      expect(iso(day)).toEqual(['2025-11-02T05:30:00.000Z']);
      expect(iso(nextTicks(nightly, at('2025-11-01T12:00:00Z'), 3))).toEqual([
        '2025-11-02T05:30:00.000Z',
        '2025-11-03T06:30:00.000Z',
        '2025-11-04T06:30:00.000Z',
      ]);
    });

    it('asked from between the two occurrences, the next tick is the next day', () => {
      expect(iso(nextTicks(schedule('30 1 * * *', 'America/New_York'), at('2025-11-02T06:00:00Z'), 1))).toEqual([
        '2025-11-03T06:30:00.000Z',
      ]);
    });

    it('Europe/Berlin, 2025-10-26: 02:30 fires once, in summer time; six fields and lists too', () => {
      const berlin = 'Europe/Berlin';
      const day = [at('2025-10-25T22:00:00Z'), at('2025-10-26T23:00:00Z')] as const;
      expect(iso(ticksBetween(schedule('30 2 * * *', berlin), ...day, 10))).toEqual(['2025-10-26T00:30:00.000Z']);
      expect(iso(ticksBetween(schedule('15 30 2 * * *', berlin), ...day, 10))).toEqual(['2025-10-26T00:30:15.000Z']);
      expect(ticksBetween(schedule('30 2,13 * * *', berlin), ...day, 10).map((tick) => wallClock(tick, berlin))).toEqual([
        '2025-10-26 02:30:00',
        '2025-10-26 13:30:00',
      ]);
    });
  });

  describe('an hourly schedule counts the real hours of the zone-local day', () => {
    it.each([
      ['America/New_York', 'spring-forward', 23, '2025-03-09T05:00:00Z', '2025-03-10T04:00:00Z'],
      ['America/New_York', 'ordinary', 24, '2025-06-10T04:00:00Z', '2025-06-11T04:00:00Z'],
      ['America/New_York', 'fall-back', 25, '2025-11-02T04:00:00Z', '2025-11-03T05:00:00Z'],
      ['Europe/Berlin', 'spring-forward', 23, '2025-03-29T23:00:00Z', '2025-03-30T22:00:00Z'],
      ['Europe/Berlin', 'fall-back', 25, '2025-10-25T22:00:00Z', '2025-10-26T23:00:00Z'],
    ])('%s, %s day: %i ticks, each one hour after the last', (tz, _kind, count, from, to) => {
      const ticks = ticksBetween(schedule('0 * * * *', tz), at(from), at(to), 100);
      expect(ticks).toHaveLength(count);
      expect(wallClock(ticks[0], tz).slice(11)).toBe('00:00:00');
      for (let i = 1; i < ticks.length; i++) expect(ticks[i].getTime() - ticks[i - 1].getTime()).toBe(HOUR);
    });

    it('on the New York fall-back day, the local hour 01:00 appears twice', () => {
      const ticks = ticksBetween(schedule('0 * * * *', 'America/New_York'), at('2025-11-02T04:00:00Z'), at('2025-11-03T05:00:00Z'), 100);
      const hours = ticks.map((tick) => wallClock(tick, 'America/New_York').slice(11, 13));
      expect(hours.slice(0, 4)).toEqual(['00', '01', '01', '02']);
    });
  });

  it("latestTick (the library's backward search) agrees with forward stepping at every tick around both transitions", () => {
    for (const [cron, tz, from] of [
      ['30 2 * * *', 'America/New_York', '2025-03-07T00:00:00Z'],
      ['30 1 * * *', 'America/New_York', '2025-10-31T00:00:00Z'],
      ['0 * * * *', 'Europe/Berlin', '2025-10-25T20:00:00Z'],
      ['*/20 * * * *', 'Europe/Berlin', '2025-03-29T22:00:00Z'],
    ] as const) {
      const s = schedule(cron, tz);
      const ticks = nextTicks(s, at(from), 60);
      for (let i = 1; i < ticks.length; i++) {
        // At a tick, just after it, and just before the next one, the latest tick is that tick.
        expect(latestTick(s, ticks[i])).toEqual(ticks[i]);
        expect(latestTick(s, new Date(ticks[i].getTime() + 1))).toEqual(ticks[i]);
        expect(latestTick(s, new Date(ticks[i].getTime() - 1))).toEqual(ticks[i - 1]);
      }
    }
  });
});

describe('dueTicks', () => {
  // Hourly; the last tick fired was 10:00; the supervisors were down until 14:20.
  const lastTick = at('2025-01-01T10:00:00Z');
  const afterDowntime = at('2025-01-01T14:20:00Z');
  const hourly = (missed: MissedTicks): Schedule => schedule('0 * * * *', 'UTC', missed);

  it('skip: runs none of the missed ticks', () => {
    expect(dueTicks(hourly('skip'), lastTick, afterDowntime)).toEqual([]);
  });

  it('once: runs the most recent missed tick only', () => {
    expect(iso(dueTicks(hourly('once'), lastTick, afterDowntime))).toEqual(['2025-01-01T14:00:00.000Z']);
  });

  it('backfill N: runs the N most recent missed ticks, oldest first', () => {
    expect(iso(dueTicks(hourly({ backfill: 3 }), lastTick, afterDowntime))).toEqual([
      '2025-01-01T12:00:00.000Z',
      '2025-01-01T13:00:00.000Z',
      '2025-01-01T14:00:00.000Z',
    ]);
  });

  it('backfill N: never goes back to the last tick fired or before it', () => {
    expect(iso(dueTicks(hourly({ backfill: 10 }), lastTick, afterDowntime))).toEqual([
      '2025-01-01T11:00:00.000Z',
      '2025-01-01T12:00:00.000Z',
      '2025-01-01T13:00:00.000Z',
      '2025-01-01T14:00:00.000Z',
    ]);
  });

  it.each([['skip' as const], ['once' as const], [{ backfill: 3 }]])(
    '%j: runs a tick that is due now, or late by up to LATE_TICK_MS',
    (missed) => {
      const previous = at('2025-01-01T13:00:00Z');
      expect(iso(dueTicks(hourly(missed), previous, at('2025-01-01T14:00:00.000Z')))).toEqual(['2025-01-01T14:00:00.000Z']);
      expect(iso(dueTicks(hourly(missed), previous, new Date(at('2025-01-01T14:00:00Z').getTime() + LATE_TICK_MS)))).toEqual([
        '2025-01-01T14:00:00.000Z',
      ]);
    },
  );

  it('skip: a tick later than LATE_TICK_MS was missed, and a lateTickMs option moves that line', () => {
    const previous = at('2025-01-01T13:00:00Z');
    const tooLate = new Date(at('2025-01-01T14:00:00Z').getTime() + LATE_TICK_MS + 1);
    expect(dueTicks(hourly('skip'), previous, tooLate)).toEqual([]);
    expect(iso(dueTicks(hourly('skip'), previous, tooLate, { lateTickMs: 60_000 }))).toEqual(['2025-01-01T14:00:00.000Z']);
  });

  it('skip: after downtime ending just after a tick, runs that tick only, not the older ones', () => {
    expect(iso(dueTicks(hourly('skip'), lastTick, at('2025-01-01T14:00:01Z')))).toEqual(['2025-01-01T14:00:00.000Z']);
  });

  it('returns nothing when the latest tick was already fired, under every policy', () => {
    for (const missed of ['skip', 'once', { backfill: 5 }] as const) {
      expect(dueTicks(hourly(missed), at('2025-01-01T14:00:00Z'), afterDowntime)).toEqual([]);
    }
  });

  it('returns nothing when the last tick is after now (a supervisor whose clock is behind the one that fired it)', () => {
    for (const missed of ['skip', 'once', { backfill: 5 }] as const) {
      expect(dueTicks(hourly(missed), at('2025-01-01T15:00:00Z'), afterDowntime)).toEqual([]);
    }
  });

  it('returns nothing before the first tick after the last one', () => {
    expect(dueTicks(hourly({ backfill: 5 }), at('2025-01-01T14:00:00Z'), at('2025-01-01T14:59:59.999Z'))).toEqual([]);
  });

  it('a schedule without history missed nothing: whatever its policy, only a tick due now runs', () => {
    expect(dueTicks(hourly({ backfill: 5 }), null, afterDowntime)).toEqual([]);
    expect(dueTicks(hourly('once'), null, afterDowntime)).toEqual([]);
    expect(iso(dueTicks(hourly({ backfill: 5 }), null, at('2025-01-01T14:00:00.020Z')))).toEqual(['2025-01-01T14:00:00.000Z']);
  });

  it('backfills the 1000 most recent ticks of a per-second schedule after a day of downtime', () => {
    const perSecond = schedule('* * * * * *', 'UTC', { backfill: 1000 });
    const ticks = dueTicks(perSecond, at('2025-01-01T00:00:00Z'), at('2025-01-02T00:00:00.500Z'));
    expect(ticks).toHaveLength(1000);
    expect(ticks[0].toISOString()).toBe('2025-01-01T23:43:21.000Z');
    expect(ticks.at(-1)!.toISOString()).toBe('2025-01-02T00:00:00.000Z');
  });

  it('backfills across a spring-forward day with the 03:00 run of a 02:30 schedule, once', () => {
    const nightly = schedule('30 2 * * *', 'America/New_York', { backfill: 10 });
    const ticks = dueTicks(nightly, at('2025-03-07T12:00:00Z'), at('2025-03-11T12:00:00Z'));
    expect(ticks.map((tick) => wallClock(tick, 'America/New_York'))).toEqual([
      '2025-03-08 02:30:00',
      '2025-03-09 03:00:00',
      '2025-03-10 02:30:00',
      '2025-03-11 02:30:00',
    ]);
  });

  it('backfills across a fall-back day with one run of a 01:30 schedule that day', () => {
    const nightly = schedule('30 1 * * *', 'America/New_York', { backfill: 10 });
    const ticks = dueTicks(nightly, at('2025-11-01T12:00:00Z'), at('2025-11-03T12:00:00Z'));
    expect(iso(ticks)).toEqual(['2025-11-02T05:30:00.000Z', '2025-11-03T06:30:00.000Z']);
  });
});
