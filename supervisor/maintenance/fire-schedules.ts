/**
 * Chore: add each schedule's job at its tick. One timer, set for the
 * earliest next tick of the active schedules; no polling. The table is read
 * again at each firing, when a change is announced on the jobs channel
 * (`grapevine schedule ...`, another supervisor's declarations) and when
 * the LISTEN connection comes back, since a notification may have been
 * missed meanwhile.
 *
 * Every supervisor keeps this timer, and at a tick the supervisors elect
 * the one that fires it with the schedule's row lock: the first to lock it
 * adds the tick's job and advances last_tick in one transaction (one per
 * schedule); the others
 * wait for that commit, then read the new last_tick and add nothing. A
 * supervisor killed mid-firing rolls back and frees the lock, so the next
 * one fires the tick with no failover delay. The unique index on (schedule,
 * scheduled_for) makes a second job for a tick impossible whatever the
 * timing, so the lock only saves the others a wasted insert.
 */
import type pg from 'pg';
import { withTransaction } from '../../src/db.ts';
import { throttledWarnings, type Logger } from '../../src/log.ts';
import type { Schedule } from '../../src/schedule/schedule.ts';
import { scheduleFromRow } from '../../src/schedule/stored.ts';
import { dueTicks, latestTick, nextTicks } from '../../src/schedule/ticks.ts';
import {
  advanceLastTicks,
  insertTickJobs,
  listSchedules,
  lockDueSchedules,
  type ScheduleRow,
  type TickJob,
} from '../../src/sql/schedules.ts';

export interface ScheduleFiringOptions {
  pool: pg.Pool;
  schema: string;
  logger: Logger;
}

/** After a failed firing (the database unreachable, a lock held too long), when to try again. */
const RETRY_MS = 1_000;
/** How long a firing waits for another supervisor's firing of the same tick, which takes milliseconds unless that one hangs. */
const LOCK_TIMEOUT_MS = 5_000;
/** The longest a timer can wait in Node; a tick further away re-reads the table then. */
const MAX_TIMER_MS = 2 ** 31 - 1;

interface Active {
  schedule: Schedule;
  lastTick: Date | null;
}

export class ScheduleFiring {
  private readonly o: ScheduleFiringOptions;
  private timer: NodeJS.Timeout | null = null;
  private started = false;
  private stopped = false;
  private running: Promise<void> | null = null;
  private again = false;
  private readonly warn = throttledWarnings(5_000);
  /** Rows already warned about, so a bad stored schedule is named once per change. */
  private readonly invalid = new Map<string, string>();

  constructor(options: ScheduleFiringOptions) {
    this.o = options;
  }

  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    this.wake();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Re-read the table and fire what is due; a wake during a firing runs once more after it. */
  wake(): void {
    if (!this.started || this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.fire().finally(() => {
      this.running = null;
      if (this.again) {
        this.again = false;
        this.wake();
      }
    });
  }

  /** Settles when the firing under way (if any) is done: for tests and shutdown. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private async fire(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    let active: Active[];
    try {
      active = this.parse(await listSchedules(this.o.pool, this.o.schema));
    } catch (err) {
      this.warn(this.o.logger, { err: (err as Error).message }, 'could not read the schedules; trying again');
      return this.arm(Date.now() + RETRY_MS);
    }
    const now = new Date();
    let failed = false;
    for (const due of active.filter((a) => isDue(a, now))) {
      // One transaction per schedule: a schedule that cannot fire (its payload over the
      // schema's limit, say) holds up no other.
      await this.fireOne(due.schedule.name).catch((err: Error) => {
        failed = true;
        this.warn(this.o.logger, { schedule: due.schedule.name, err: err.message }, 'could not fire a schedule; trying again');
      });
    }
    this.arm(failed ? Math.min(Date.now() + RETRY_MS, earliestTick(active)) : earliestTick(active));
  }

  /** One transaction: lock the schedule's row, add its due ticks' jobs, advance its last_tick. */
  private async fireOne(name: string): Promise<void> {
    const { pool, schema, logger } = this.o;
    const added = await withTransaction(pool, async (client) => {
      await client.query(`SET LOCAL lock_timeout = ${LOCK_TIMEOUT_MS}`);
      const [locked] = this.parse(await lockDueSchedules(client, schema, { names: [name] }));
      // Removed or paused meanwhile.
      if (!locked) return [];
      // After the lock: another supervisor may have fired these ticks while this one waited.
      const { schedule, lastTick } = locked;
      const now = new Date();
      const jobs = dueTicks(schedule, lastTick, now).map((tick) => tickJob(schedule, tick));
      const ids = jobs.length > 0 ? await insertTickJobs(client, schema, jobs) : [];
      const latest = latestTick(schedule, now);
      if (latest && (lastTick === null || latest > lastTick)) {
        await advanceLastTicks(client, schema, [{ name: schedule.name, last_tick: latest.toISOString() }]);
      }
      return ids;
    });
    if (added.length > 0) logger.debug({ schedule: name, jobs: added }, 'schedule fired');
  }

  /** The rows this grapevine can run; a row it cannot (edited by hand) is named once and left alone. */
  private parse(rows: ScheduleRow[]): Active[] {
    const active: Active[] = [];
    for (const row of rows) {
      if (row.paused) continue;
      try {
        active.push({ schedule: scheduleFromRow(row), lastTick: row.last_tick });
        this.invalid.delete(row.name);
      } catch (err) {
        const message = (err as Error).message;
        if (this.invalid.get(row.name) !== message) {
          this.invalid.set(row.name, message);
          this.o.logger.warn(
            { schedule: row.name, err: message },
            'a stored schedule is invalid and does not fire: fix it with grapevine schedule add',
          );
        }
      }
    }
    return active;
  }

  private arm(at: number): void {
    if (this.stopped || at === Infinity) return;
    const delay = Math.min(Math.max(0, at - Date.now()), MAX_TIMER_MS);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.wake();
    }, delay);
  }
}

/** Whether the schedule has a tick after its last one and at or before now. */
function isDue({ schedule, lastTick }: Active, now: Date): boolean {
  const latest = latestTick(schedule, now);
  return latest !== null && (lastTick === null || latest > lastTick);
}

/** The earliest tick still to come of any schedule (epoch ms), or Infinity if none has one. */
function earliestTick(active: Active[]): number {
  const now = new Date();
  let earliest = Infinity;
  for (const { schedule } of active) {
    const next = nextTicks(schedule, now, 1)[0];
    if (next && next.getTime() < earliest) earliest = next.getTime();
  }
  return earliest;
}

function tickJob(schedule: Schedule, tick: Date): TickJob {
  return {
    schedule: schedule.name,
    scheduled_for: tick.toISOString(),
    task: schedule.task,
    payload: schedule.payload,
    queue: schedule.queue,
    priority: schedule.priority,
    max_attempts: schedule.maxAttempts,
  };
}
