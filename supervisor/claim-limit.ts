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

/**
 * A thread's limit until it has shown its handlers: the first claims stay
 * small. 32 rather than fewer: at 8, a quick thread needed five claim round
 * trips to reach the default concurrency, a visible share of a short drain.
 */
export const FIRST_CLAIM_LIMIT = 32;

/**
 * A thread may hold up to this many times its concurrency: the jobs beyond
 * the concurrency wait in the thread for a handler to return (threads/entry.ts),
 * so that a thread of quick handlers claims in large batches, the way
 * graphile-worker's local queue does. Only while its handlers are quick
 * (QUICK_HANDLER_MS): slow ones would strand the waiting jobs on this thread
 * while another thread or supervisor could run them.
 */
export const PREFETCH_FACTOR = 2;

/** Handlers that return within this long of their claim let their thread prefetch. */
export const QUICK_HANDLER_MS = 50;

/** How long, at most, the jobs a thread holds may block its event loop between them. */
export const BLOCKING_BUDGET_MS = 100;

/**
 * The thread's next limit after a batch of `jobs` whose handlers blocked its
 * event loop for `blockedMs` in all while starting: double the current one
 * while that is within the budget (so a quick thread reaches its most in a
 * few batches), else as many jobs as fit in the budget; never below 1, nor
 * above the concurrency unless maxClaimLimit() jobs fit in the budget.
 */
export function nextClaimLimit(current: number, concurrency: number, jobs: number, blockedMs: number): number {
  if (jobs === 0) return current;
  const fit = blockedMs > 0 ? Math.floor((BLOCKING_BUDGET_MS * jobs) / blockedMs) : Infinity;
  // Beyond the concurrency only if all of it fits in the budget: blocking handlers never prefetch.
  const most = fit >= maxClaimLimit(concurrency) ? maxClaimLimit(concurrency) : Math.max(1, concurrency);
  return Math.max(1, Math.min(most, 2 * current, fit));
}

/** The most a thread may hold: its concurrency, and as many again waiting for a handler. */
export function maxClaimLimit(concurrency: number): number {
  return PREFETCH_FACTOR * Math.max(1, concurrency);
}

/**
 * What a thread may hold now: its learned limit, but no more than its
 * concurrency while its handlers are slow (or not known to be quick).
 */
export function effectiveClaimLimit(learned: number, concurrency: number, quick: boolean): number {
  return quick ? learned : Math.min(learned, Math.max(1, concurrency));
}

/** The limit of a thread nothing is known about yet. */
export function firstClaimLimit(concurrency: number): number {
  return Math.max(1, Math.min(concurrency, FIRST_CLAIM_LIMIT));
}
