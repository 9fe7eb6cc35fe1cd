import { cronOf, type Schedule } from './schedule.ts';

/**
 * How long after its instant a tick still counts as on time rather than
 * missed. A live leader fires a tick within milliseconds, but a busy event
 * loop or a leader failover can make it seconds late; that is lateness, not
 * downtime, so even a `skip` schedule still runs such a tick.
 */
export const LATE_TICK_MS = 10_000;

/**
 * The next `count` ticks strictly after `after`, earliest first. A tick is
 * an instant (whole seconds); with the schedule's name it identifies the one
 * job the tick adds.
 */
export function nextTicks(schedule: Schedule, after: Date, count: number): Date[] {
  checkInstant('after', after);
  checkCount('count', count);
  const cron = cronOf(schedule);
  const ticks: Date[] = [];
  for (let at = after; ticks.length < count; ) {
    const tick = cron.nextRun(at);
    if (!tick) break;
    ticks.push(tick);
    at = tick;
  }
  return ticks;
}

/** The ticks from `from` (included) to `to` (excluded), earliest first, at most `limit` of them. */
export function ticksBetween(schedule: Schedule, from: Date, to: Date, limit: number): Date[] {
  checkInstant('from', from);
  checkInstant('to', to);
  checkCount('limit', limit);
  const cron = cronOf(schedule);
  const ticks: Date[] = [];
  for (let at = new Date(from.getTime() - 1); ticks.length < limit; ) {
    const tick = cron.nextRun(at);
    if (!tick || tick.getTime() >= to.getTime()) break;
    ticks.push(tick);
    at = tick;
  }
  return ticks;
}

/** The most recent tick at or before `atOrBefore`, or null if the schedule never fired before it. */
export function latestTick(schedule: Schedule, atOrBefore: Date): Date | null {
  checkInstant('atOrBefore', atOrBefore);
  return recentTicks(schedule, atOrBefore, 1)[0] ?? null;
}

/**
 * The ticks to add jobs for at `now`, oldest first, given the last tick
 * already fired (null: the schedule has no history, so nothing before now
 * was missed). Of the ticks after `lastTick` and at or before `now`:
 * - the most recent one is on time if it is at most `lateTickMs` old, and
 *   runs under every policy;
 * - `skip` runs nothing else;
 * - `once` runs the most recent one, however old;
 * - `{ backfill: N }` runs up to the N most recent ones.
 * The caller records `latestTick(schedule, now)` as the new last tick
 * whatever this returns, so skipped ticks are not considered again.
 */
export function dueTicks(schedule: Schedule, lastTick: Date | null, now: Date, options: { lateTickMs?: number } = {}): Date[] {
  checkInstant('now', now);
  if (lastTick !== null) checkInstant('lastTick', lastTick);
  const lateTickMs = options.lateTickMs ?? LATE_TICK_MS;
  const policy = lastTick === null ? 'skip' : schedule.missed;
  const wanted = typeof policy === 'object' ? policy.backfill : 1;
  const ticks = recentTicks(schedule, now, wanted).filter((tick) => lastTick === null || tick.getTime() > lastTick.getTime());
  if (policy !== 'skip') return ticks;
  const latest = ticks.at(-1);
  return latest && now.getTime() - latest.getTime() <= lateTickMs ? [latest] : [];
}

/** Up to `count` of the most recent ticks at or before `now`, oldest first, without stepping through older ones. */
function recentTicks(schedule: Schedule, now: Date, count: number): Date[] {
  return cronOf(schedule)
    .previousRuns(count, new Date(now.getTime() + 1))
    .reverse();
}

function checkInstant(what: string, value: unknown): void {
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) throw new TypeError(`${what} must be a valid Date, got ${String(value)}`);
}

function checkCount(what: string, value: number): void {
  if (!Number.isInteger(value) || value < 0) throw new RangeError(`${what} must be a whole number of ticks, got ${value}`);
}
