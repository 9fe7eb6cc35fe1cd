// Spawning child processes (supervisors for scale-out and the SIGKILL recovery, the
// arriving workload's enqueuer) and waiting for them. Every child is tracked so a failing workload still ends what it started.
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildMessage, ChildSpec, ParentMessage } from '../supervisor-child.ts';

const BENCH_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_DIR = path.join(BENCH_DIR, '..');
export const CLI_PATH = path.join(REPO_DIR, 'dist', 'supervisor', 'cli.js');

const live = new Set<ChildProcess>();

/**
 * A child's spec travels in its environment, not its arguments: it holds the
 * connection string, and with it the embedded server's password, and any
 * user of the machine can read a process's arguments (`ps`), not its
 * environment.
 */
const SPEC_ENV = 'GRAPEVINE_BENCH_SPEC';

export function specEnv(spec: unknown): NodeJS.ProcessEnv {
  return { ...process.env, [SPEC_ENV]: JSON.stringify(spec) };
}

/** The spec this process was started with (see specEnv); it is not passed on to its own children. */
export function readSpec<T>(): T {
  const text = process.env[SPEC_ENV];
  if (!text) throw new Error(`${SPEC_ENV} is not set: this script is started by the bench (bench/run.ts)`);
  delete process.env[SPEC_ENV];
  return JSON.parse(text) as T;
}

/** Ends every child still running (by pid, the ones this process started). */
export function killAllChildren(): void {
  for (const child of live) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  live.clear();
}

function track(child: ChildProcess, label: string): ChildProcess {
  live.add(child);
  let tail = '';
  const keep = (chunk: Buffer) => (tail = (tail + chunk.toString()).slice(-4000));
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.on('exit', (code, signal) => {
    live.delete(child);
    if (code && code !== 0 && signal !== 'SIGKILL') process.stderr.write(`[${label}] exited ${code}\n${tail}\n`);
  });
  return child;
}

/** A child process driven over IPC: messages out, and a wait for the next of a kind. */
export interface ControlledChild<In, Out extends { kind: string }> {
  child: ChildProcess;
  pid: number;
  send(m: In): void;
  /** Rejects when `kind` does not come within `timeoutMs`, or the child exits first. */
  next<K extends Out['kind']>(kind: K, timeoutMs?: number): Promise<Extract<Out, { kind: K }>>;
}

/** Forks `script` (a file in bench/) with `spec` in its environment and waits for its "ready". */
export async function forkControlled<In, Out extends { kind: string }>(
  script: string,
  spec: unknown,
  timeoutMs: number,
  onMessage: (m: Out) => void = () => {},
): Promise<ControlledChild<In, Out>> {
  const child = track(fork(path.join(BENCH_DIR, script), [], { env: specEnv(spec), stdio: ['ignore', 'pipe', 'pipe', 'ipc'] }), script);
  const waiters = new Map<string, { resolve: (m: Out) => void; reject: (err: Error) => void }>();
  const ctl: ControlledChild<In, Out> = {
    child,
    pid: child.pid!,
    send: (m) => child.send(m as object),
    next: (kind, ms = timeoutMs) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${script} ${child.pid}: no "${kind}" within ${ms} ms`)), ms);
        const done = (fn: () => void) => {
          clearTimeout(timer);
          waiters.delete(kind);
          fn();
        };
        waiters.set(kind, { resolve: (m) => done(() => resolve(m as never)), reject: (err) => done(() => reject(err)) });
      }),
  };
  child.on('message', (m: Out) => {
    onMessage(m);
    waiters.get(m.kind)?.resolve(m);
  });
  child.on('exit', (code, signal) => {
    for (const [kind, w] of waiters) w.reject(new Error(`${script} ${child.pid} exited ${signal ?? code} before "${kind}"`));
  });
  await ctl.next('ready' as Out['kind'], timeoutMs);
  return ctl;
}

export type ControlledSupervisor = ControlledChild<ParentMessage, ChildMessage> & { handled: number };

/** bench/supervisor-child.ts: a supervisor process the bench can pause, resume and query. */
export async function forkSupervisor(spec: ChildSpec, timeoutMs = 30_000): Promise<ControlledSupervisor> {
  let handled = 0;
  const ctl = await forkControlled<ParentMessage, ChildMessage>('supervisor-child.ts', spec, timeoutMs, (m) => {
    if (m.kind === 'handled') handled += m.count;
  });
  return Object.defineProperty(ctl, 'handled', {
    get: () => handled,
    set: (n: number) => (handled = n),
    enumerable: true,
  }) as ControlledSupervisor;
}

/** `grapevine run` from dist/ when it has been built, else the bench's own child. */
export function spawnSupervisorProcess(spec: ChildSpec): { child: ChildProcess; via: string } {
  if (existsSync(CLI_PATH)) {
    const args = [
      CLI_PATH,
      'run',
      '--tasks',
      spec.tasks,
      '--threads',
      String(spec.threads),
      '--concurrency',
      String(spec.concurrency),
      '--schema',
      spec.schema,
    ];
    const child = spawn(process.execPath, args, {
      env: { ...process.env, DATABASE_URL: spec.connectionString, GRAPEVINE_LOG_LEVEL: process.env.GRAPEVINE_LOG_LEVEL ?? 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return { child: track(child, 'grapevine run'), via: 'node dist/supervisor/cli.js run' };
  }
  const child = fork(path.join(BENCH_DIR, 'supervisor-child.ts'), [], {
    env: specEnv({ ...spec, paused: false }),
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  return { child: track(child, 'supervisor-child'), via: 'bench/supervisor-child.ts (dist/supervisor/cli.js not built)' };
}

export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}
