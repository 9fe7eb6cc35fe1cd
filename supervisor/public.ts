/**
 * grapevine's public API. Everything a user may import is named here;
 * nothing else in the package is a supported interface.
 */
import '../src/node-version.ts';

export { createClient } from '../src/client.ts';
export type { AddJobOptions, Client, ClientOptions, DependencyFailure, FlowJob, JobSpec, KeyMode, WaitOptions } from '../src/client.ts';
export { createControl } from '../src/control.ts';
export type {
  Control,
  ControlClientOptions,
  ControlResponse,
  JobFilter,
  JobLink,
  JobLinks,
  JobPage,
  JobStats,
  LogEntry,
  QueueConfig,
  QueueInfo,
  QueueSettings,
  Rate,
  RegistryStatus,
  SendOptions,
  SupervisorInfo,
  ThreadStatus,
} from '../src/control.ts';
export { startSupervisor } from './index.ts';
export type { Supervisor, SupervisorOptions, SupervisorState, SupervisorStatus } from './index.ts';
export type { JobEndEvent, JobEvent, SupervisorEventListener, SupervisorEventName, SupervisorEvents } from './events.ts';
export { GrapevineError } from '../src/errors.ts';
export type { ErrorCode } from '../src/errors.ts';
export type { Job, JobState } from '../src/job.ts';
export { PermanentError } from '../src/task.ts';
export type { Dependency, HandlerThread, JobInfo, TaskHandler, TaskHelpers, TransactionHelpers, TransactionOptions } from '../src/task.ts';
export { DEFAULTS } from '../src/config.ts';
export { VERSION } from '../src/version.ts';
export { describeConnection } from '../src/redact.ts';
export { createSchedules } from '../src/schedules.ts';
export type { MissedTicks, ScheduleSpec, Schedules, SchedulesOptions, StoredSchedule } from '../src/schedules.ts';
export { createDashboardHandler } from '../src/dashboard/handler.ts';
export type { DashboardHandler, DashboardOptions } from '../src/dashboard/handler.ts';
