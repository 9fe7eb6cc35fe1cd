import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

export const ROOT = path.resolve(import.meta.dirname, '../..');
/** The built CLI, as users run it (test/setup/build.ts refuses to run the suite without a fresh build). */
export const CLI = path.join(ROOT, 'dist/supervisor/cli.js');

export interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface Running {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves when stdout or stderr has printed a line matching `pattern`. */
  waitFor(pattern: RegExp): Promise<string>;
  exited: Promise<Finished>;
}

export function start(args: string[], env: Record<string, string | undefined> = {}, cwd = ROOT): Running {
  const child = spawn(process.execPath, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const watchers: Array<{ pattern: RegExp; resolve: (line: string) => void }> = [];
  const check = () => {
    for (const w of [...watchers]) {
      const m = w.pattern.exec(out + err);
      if (m) {
        watchers.splice(watchers.indexOf(w), 1);
        w.resolve(m[0]);
      }
    }
  };
  child.stdout!.on('data', (d) => {
    out += d;
    check();
  });
  child.stderr!.on('data', (d) => {
    err += d;
    check();
  });
  const exited = new Promise<Finished>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, stdout: out, stderr: err })),
  );
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitFor: (pattern) =>
      new Promise((resolve, reject) => {
        watchers.push({ pattern, resolve });
        check();
        void exited.then((f) => reject(new Error(`process exited (${f.code}) before printing ${pattern}:\n${f.stdout}\n${f.stderr}`)));
      }),
  };
}

export function run(args: string[], env: Record<string, string | undefined> = {}): Promise<Finished> {
  return start(args, env).exited;
}

/**
 * SIGTERMs a grapevine/testing supervisor process and returns '' when it
 * exits 0, else its exit code and the tail of what it printed, so a failed
 * run can be diagnosed from CI's log alone.
 */
export async function stopAndExplain(proc: { stop(): Promise<number | null>; output(): string }): Promise<string> {
  const code = await proc.stop();
  return code === 0 ? '' : `exit code ${code}; it printed:\n${proc.output().slice(-4000)}`;
}
