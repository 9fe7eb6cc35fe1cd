import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { ROOT } from '../helpers/process.ts';

/** The suites run threads from the build (see THREAD_ENTRY in supervisor/threads.ts). */
export const BUILT_THREAD_ENTRY = path.join(ROOT, 'dist/threads/entry.js');

/**
 * The suites' threads run the build, so a build older than the sources would
 * test old code without a word: refuse to start instead.
 */
export default async function checkBuild(): Promise<void> {
  const built = await stat(BUILT_THREAD_ENTRY).catch(() => null);
  const fix = 'run `npm run build` (npm test and npm run test:chaos do it for you)';
  if (!built) throw new Error(`${BUILT_THREAD_ENTRY} is missing: the tests run threads from the build; ${fix}`);
  let newest = { file: '', mtimeMs: 0 };
  for (const dir of ['src', 'threads', 'supervisor']) {
    for (const entry of await readdir(path.join(ROOT, dir), { recursive: true })) {
      if (!entry.endsWith('.ts')) continue;
      const file = path.join(dir, entry);
      const { mtimeMs } = await stat(path.join(ROOT, file));
      if (mtimeMs > newest.mtimeMs) newest = { file, mtimeMs };
    }
  }
  if (newest.mtimeMs > built.mtimeMs) {
    throw new Error(`${newest.file} is newer than the build the tests run threads from; ${fix}`);
  }
}
