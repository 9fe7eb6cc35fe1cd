// A grapevine supervisor in its own process, driven by the bench over IPC: it boots
// paused, resumes on request, relays its threads' completion counts, and reports its
// dispatcher counters and peak RSS. Same startSupervisor() as `grapevine run`, plus the
// pause/resume the scale-out workload needs to start N supervisors on one backlog.
// Usage: forked by bench/lib/procs.ts with an IPC channel and its ChildSpec in the environment (specEnv).
import pino from 'pino';
import { startSupervisor } from 'grapevine-jobs';
import { listenToThreads } from './lib/channel.mjs';
import { readSpec } from './lib/procs.ts';

export interface ChildSpec {
  connectionString: string;
  schema: string;
  tasks: string;
  threads: number;
  concurrency: number;
  paused: boolean;
  deleteSucceeded?: boolean;
  /** Behind a pooler: where LISTEN goes, and statements unnamed. */
  listenUrl?: string;
  preparedStatements?: boolean;
}

export type ParentMessage = { kind: 'resume' } | { kind: 'pause' } | { kind: 'stats' } | { kind: 'stop' };
export type ChildMessage =
  | { kind: 'ready'; pid: number }
  | { kind: 'handled'; count: number }
  | { kind: 'stats'; counters: Record<string, number>; rssMb: number; connections: { inUse: number; max: number; listen: number } }
  | { kind: 'stopped' };

const spec = readSpec<ChildSpec>();
const send = (m: ChildMessage) => process.send?.(m);

const channel = listenToThreads((report) => {
  if (report.kind === 'handled') send({ kind: 'handled', count: report.count ?? 0 });
});

const supervisor = await startSupervisor({
  connectionString: spec.connectionString,
  schema: spec.schema,
  tasks: spec.tasks,
  threads: spec.threads,
  concurrency: spec.concurrency,
  deleteSucceeded: spec.deleteSucceeded === true,
  listenUrl: spec.listenUrl,
  preparedStatements: spec.preparedStatements,
  logger: pino({ level: process.env.GRAPEVINE_LOG_LEVEL ?? 'warn' }),
});
if (spec.paused) supervisor.pause();

process.on('message', (m: ParentMessage) => {
  if (m.kind === 'resume') supervisor.resume();
  else if (m.kind === 'pause') supervisor.pause();
  else if (m.kind === 'stats') {
    const { counters, connections } = supervisor.status();
    send({ kind: 'stats', counters: { ...counters }, rssMb: process.resourceUsage().maxRSS / 1024, connections });
  } else if (m.kind === 'stop') {
    void supervisor.stop({ graceMs: 5000 }).then(() => {
      channel.close();
      send({ kind: 'stopped' });
      process.exit(0);
    });
  }
});
// The parent going away (even by SIGKILL) must not leave supervisors behind.
process.on('disconnect', () => void supervisor.stop({ graceMs: 0 }).finally(() => process.exit(0)));
send({ kind: 'ready', pid: process.pid });
