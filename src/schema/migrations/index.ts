import * as jobs from './0001_jobs.ts';
import * as control from './0002_control.ts';
import * as claimPlans from './0003_claim_plans.ts';
import * as pruneIndex from './0004_prune_index.ts';
import * as boundedReads from './0005_bounded_reads.ts';
import * as maintenancePace from './0006_maintenance_pace.ts';
import * as logFollowers from './0007_log_followers.ts';
import * as bestEffortNotify from './0008_best_effort_notify.ts';
import * as unhandledTasks from './0009_unhandled_tasks.ts';

export interface Migration {
  version: number;
  name: string;
  sql(schema: string): string;
}

/** Append-only: a released migration is never edited, only followed by a new one. */
export const MIGRATIONS: readonly Migration[] = [jobs, control, claimPlans, pruneIndex, boundedReads, maintenancePace, logFollowers, bestEffortNotify, unhandledTasks];

export const LATEST_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;
