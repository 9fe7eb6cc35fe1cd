/**
 * When the leader runs its chores, as pure rules (the unit tests check them).
 * The maintenance table decides for the fleet; these only say what a tick
 * asks it for.
 */

/**
 * How long ago another supervisor's reap makes this tick skip: half an
 * interval, because one supervisor's timer can fire a little early against
 * the server's clock and a lone supervisor must not skip every other tick.
 * A forced tick (reapNow()) reaps whatever the last run was (null).
 */
export function reapPaceMs(intervalMs: number, force: boolean): number | null {
  return force ? null : Math.floor(intervalMs / 2);
}

/**
 * Whether this supervisor should ask the table for the once-per-`everyMs`
 * chores: the local clock only saves asking on every tick.
 */
export function choresDueLocally(now: number, lastAskedAt: number, everyMs: number): boolean {
  return now - lastAskedAt > everyMs;
}

/** The fleet runs the chores at most once per half their period: a lone supervisor whose period ran short against the server's clock still runs them. */
export function chorePaceMs(everyMs: number): number {
  return Math.floor(everyMs / 2);
}

/**
 * A reaper frozen mid-transaction (SIGSTOP, a long GC pause) would keep the
 * leader lock and stop everyone's reaping; the server ends its transaction
 * after this long instead.
 */
export function leaderIdleTimeoutMs(leaseMs: number): number {
  return Math.max(1_000, Math.floor(leaseMs / 2));
}
