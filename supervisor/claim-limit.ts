/**
 * How many jobs a thread may hold at once, learned from its handlers.
 *
 * A thread's handlers share its event loop. Handlers that await I/O (the
 * common case) yield it at once, so a thread runs hundreds of them side by
 * side and the more a claim takes, the fewer statements each job costs.
 * Handlers that compute run one after another, so a thread holding many of
 * them only strands jobs that another thread, or another supervisor, could
 * run now. The thread measures how long its handlers take to reach their
 * first await, and the dispatcher sizes that thread's claims from it.
 */

/** A thread's limit until it has shown its handlers: the first claims stay small. */
export const FIRST_CLAIM_LIMIT = 8;

/** How long, at most, the jobs a thread holds may block its event loop between them. */
export const BLOCKING_BUDGET_MS = 100;

/**
 * The thread's next limit after a batch of `jobs` whose handlers blocked its
 * event loop for `blockedMs` in all while starting: double the current one
 * while that is within the budget (so a quick thread reaches the configured
 * concurrency in a few batches), else as many jobs as fit in the budget;
 * never below 1 or above the concurrency.
 */
export function nextClaimLimit(current: number, concurrency: number, jobs: number, blockedMs: number): number {
  if (jobs === 0) return current;
  const fit = blockedMs > 0 ? Math.floor((BLOCKING_BUDGET_MS * jobs) / blockedMs) : Infinity;
  return Math.max(1, Math.min(concurrency, 2 * current, fit));
}

/** The limit of a thread nothing is known about yet. */
export function firstClaimLimit(concurrency: number): number {
  return Math.max(1, Math.min(concurrency, FIRST_CLAIM_LIMIT));
}
