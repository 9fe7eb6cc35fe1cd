import type { NewScheduleRow, ScheduleRow } from '../sql/schedules.ts';
import { missedOption } from './crontab.ts';
import { parseSchedule, type MissedTicks, type Schedule } from './schedule.ts';

/** A schedule as the schedules table stores it. */
export function scheduleRow(schedule: Schedule): NewScheduleRow {
  return {
    name: schedule.name,
    cron: schedule.cron,
    tz: schedule.tz,
    task: schedule.task,
    payload: schedule.payload,
    queue: schedule.queue,
    priority: schedule.priority,
    max_attempts: schedule.maxAttempts,
    missed: missedText(schedule.missed),
  };
}

/** A stored schedule, validated again: a row written by hand (or by another release) may not be one this grapevine can run. */
export function scheduleFromRow(row: ScheduleRow): Schedule {
  return parseSchedule({
    name: row.name,
    cron: row.cron,
    task: row.task,
    payload: row.payload,
    tz: row.tz,
    queue: row.queue,
    priority: row.priority,
    maxAttempts: row.max_attempts ?? undefined,
    missed: missedOption(row.missed),
  });
}

/** The policy as `--missed=` and the table write it. */
export function missedText(missed: MissedTicks): string {
  return typeof missed === 'object' ? `backfill:${missed.backfill}` : missed;
}
