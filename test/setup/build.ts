import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { ROOT } from '../helpers/process.ts';

/** The suites run threads from the build (see THREAD_ENTRY in supervisor/threads.ts). */
export const BUILT_THREAD_ENTRY = path.join(ROOT, 'dist/threads/entry.js');

/**
 * What is wrong with the build the suites (and the bench) run, or null: it is
 * missing, or a source file is newer than it.
 */
export async function staleBuild(fix: string): Promise<string | null> {
  const built = await stat(BUILT_THREAD_ENTRY).catch(() => null);
  if (!built) return `${BUILT_THREAD_ENTRY} is missing; ${fix}`;
  let newest = { file: '', mtimeMs: 0 };
  for (const dir of ['src', 'threads', 'supervisor']) {
    for (const entry of await readdir(path.join(ROOT, dir), { recursive: true })) {
      if (!entry.endsWith('.ts')) continue;
      const file = path.join(dir, entry);
      const { mtimeMs } = await stat(path.join(ROOT, file));
      if (mtimeMs > newest.mtimeMs) newest = { file, mtimeMs };
    }
  }
  return newest.mtimeMs > built.mtimeMs ? `${newest.file} is newer than the build in dist/; ${fix}` : null;
}

/**
 * The suites' threads run the build, so a build older than the sources would
 * test old code without a word: refuse to start instead.
 */
export default async function checkBuild(): Promise<void> {
  const problem = await staleBuild(
    'the tests run threads from the build: run `npm run build` (npm test and npm run test:chaos do it for you)',
  );
  if (problem) throw new Error(problem);
}
