/**
 * grapevine's public API. Everything a user may import is named here;
 * nothing else in the package is a supported interface.
 */
export { createClient } from './client.ts';
export type { AddJobOptions, Client, ClientOptions, JobSpec } from './client.ts';
export { createControl } from './control.ts';
export type { Control, ControlClientOptions, ControlResponse, LogEntry, RegistryStatus, SendOptions, SupervisorInfo, ThreadStatus } from './control.ts';
export { startSupervisor } from '../supervisor/index.ts';
export type { Supervisor, SupervisorOptions, SupervisorState, SupervisorStatus } from '../supervisor/index.ts';
export { GrapevineError } from './errors.ts';
export type { ErrorCode } from './errors.ts';
export type { Job, JobState } from './job.ts';
export { PermanentError } from './task.ts';
export type { HandlerThread, JobInfo, TaskHandler, TaskHelpers } from './task.ts';
export { DEFAULTS } from './config.ts';
export { VERSION } from './version.ts';
export { describeConnection } from './redact.ts';
