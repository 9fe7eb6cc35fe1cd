import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { TaskHandler } from '../src/task.ts';
import { readTaskPolicy, type RetryPolicy } from './retry-policy.ts';

const TASK_FILE = /^([A-Za-z0-9_.:-]+)\.(m?js|ts|mts)$/;

export interface LoadedTasks {
  handlers: Map<string, TaskHandler>;
  /** Per-task hard timeouts: `export const timeoutMs = …` in a task module, or `handler.timeoutMs`. */
  timeouts: Map<string, number>;
  /** Per-task retry policies: `export const retry = …` in a task module, or `handler.retry` (retry-policy.ts). */
  retries: Map<string, RetryPolicy>;
  /** The first module that failed to load, with its path; no handler from it is registered. */
  error: Error | null;
}

/**
 * Loads the task handlers once per thread. Names come from file names (a
 * directory) or export names (one module), fixed at start: job rows never
 * choose what gets imported.
 */
export async function loadTasks(tasksPath: string): Promise<LoadedTasks> {
  const handlers = new Map<string, TaskHandler>();
  const timeouts = new Map<string, number>();
  const retries = new Map<string, RetryPolicy>();
  /** Keeps a task's policy, or returns the error naming its module and field. */
  const policy = (name: string, where: string, retry: unknown, timeoutMs: unknown): Error | null => {
    const read = readTaskPolicy(where, retry, timeoutMs);
    if (typeof read === 'string') return new Error(read);
    if (read.timeoutMs !== null) timeouts.set(name, read.timeoutMs);
    if (read.retry !== null) retries.set(name, read.retry);
    return null;
  };
  const loaded = (error: Error | null): LoadedTasks => ({ handlers, timeouts, retries, error });
  const info = await stat(tasksPath).catch(() => null);
  if (!info) return loaded(new Error(`task path ${tasksPath} does not exist (pass a directory of task modules or one module)`));

  if (info.isFile()) {
    const mod = await importModule(tasksPath);
    if (mod instanceof Error) return loaded(mod);
    for (const [name, value] of Object.entries(mod)) {
      if (name === 'default' || typeof value !== 'function') continue;
      handlers.set(name, value as TaskHandler);
      const { retry, timeoutMs } = value as { retry?: unknown; timeoutMs?: unknown };
      const invalid = policy(name, `task module ${tasksPath}, export ${name}`, retry, timeoutMs);
      if (invalid) return loaded(invalid);
    }
    if (handlers.size === 0) {
      return loaded(new Error(`task module ${tasksPath} has no named function exports (export one handler per task)`));
    }
    return loaded(null);
  }

  const files = (await readdir(tasksPath)).filter((f) => TASK_FILE.test(f) && !f.endsWith('.d.ts')).sort();
  for (const file of files) {
    const full = path.join(tasksPath, file);
    const name = TASK_FILE.exec(file)![1];
    const mod = await importModule(full);
    if (mod instanceof Error) return loaded(mod);
    const handler = (mod as { default?: unknown }).default;
    if (typeof handler !== 'function') {
      return loaded(new Error(`task module ${full} has no default export function (export default async (payload, helpers) => ...)`));
    }
    if (handlers.has(name)) return loaded(new Error(`task "${name}" is defined twice in ${tasksPath}`));
    handlers.set(name, handler as TaskHandler);
    // The module's exports, else the handler's own properties (as a module of named exports sets them).
    const own = handler as { retry?: unknown; timeoutMs?: unknown };
    const exported = mod as { retry?: unknown; timeoutMs?: unknown };
    const invalid = policy(name, `task module ${full}`, exported.retry ?? own.retry, exported.timeoutMs ?? own.timeoutMs);
    if (invalid) return loaded(invalid);
  }
  if (handlers.size === 0) return loaded(new Error(`no task modules (*.js, *.mjs, *.ts) found in ${tasksPath}`));
  return loaded(null);
}

async function importModule(file: string): Promise<Record<string, unknown> | Error> {
  try {
    return (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    return new Error(`task module ${file} failed to load: ${reason}`, { cause: err });
  }
}
