// Spawning supervisor processes for scale-out and the SIGKILL recovery, and waiting
// for them. Every child is tracked so a failing workload still ends what it started.
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

export interface ControlledSupervisor {
  child: ChildProcess;
  pid: number;
  handled: number;
  send(m: ParentMessage): void;
  next<K extends ChildMessage['kind']>(kind: K, timeoutMs?: number): Promise<Extract<ChildMessage, { kind: K }>>;
}

/** bench/supervisor-child.ts: a supervisor process the bench can pause, resume and query. */
export async function forkSupervisor(spec: ChildSpec, timeoutMs = 30_000): Promise<ControlledSupervisor> {
  const child = track(
    fork(path.join(BENCH_DIR, 'supervisor-child.ts'), [], { env: specEnv(spec), stdio: ['ignore', 'pipe', 'pipe', 'ipc'] }),
    'supervisor-child',
  );
  const waiters = new Map<string, (m: ChildMessage) => void>();
  const ctl: ControlledSupervisor = {
    child,
    pid: child.pid!,
    handled: 0,
    send: (m) => child.send(m),
    next: (kind, ms = timeoutMs) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`supervisor ${child.pid}: no "${kind}" within ${ms} ms`)), ms);
        waiters.set(kind, (m) => (clearTimeout(timer), resolve(m as never)));
      }),
  };
  child.on('message', (m: ChildMessage) => {
    if (m.kind === 'handled') ctl.handled += m.count;
    const waiter = waiters.get(m.kind);
    if (waiter) (waiters.delete(m.kind), waiter(m));
  });
  await ctl.next('ready', timeoutMs);
  return ctl;
}

/** `grapevine run` from dist/ when it has been built, else the bench's own child. */
export function spawnSupervisorProcess(spec: ChildSpec): { child: ChildProcess; via: string } {
  if (existsSync(CLI_PATH)) {
    const args = [CLI_PATH, 'run', '--tasks', spec.tasks, '--threads', String(spec.threads), '--concurrency', String(spec.concurrency), '--schema', spec.schema];
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
