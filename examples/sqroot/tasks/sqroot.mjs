import { threadId } from 'node:worker_threads';

// The vignette's worker: take a number, "work" on it for a while, store its
// square root next to it. Runs on one of the supervisor's threads.
export default async function sqroot({ n, table }, { query, signal }) {
  await new Promise((resolve) => setTimeout(resolve, n * 10));
  signal.throwIfAborted();
  const root = Math.sqrt(n);
  await query(`UPDATE ${table} SET out_val = $1 WHERE in_val = $2`, [root, n]);
  return { in: n, out: root, threadId };
}
