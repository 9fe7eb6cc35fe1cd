/**
 * How long to wait before the next try of something that keeps failing: the
 * delay doubles from `baseMs` with each `attempt` (0 for the first retry) and
 * stops growing at `maxMs`. With `jitter`, a random delay between half of
 * that and all of it, so that many processes that lost the same server do
 * not all come back in the same millisecond.
 */
export function backoffMs(options: { attempt: number; baseMs: number; maxMs: number; jitter?: boolean; random?: () => number }): number {
  const { attempt, baseMs, maxMs, jitter = false, random = Math.random } = options;
  if (!(baseMs > 0) || !(maxMs > 0)) return 0;
  // 2 ** attempt is Infinity past 1023, which Math.min turns into maxMs.
  const delay = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt));
  return jitter ? delay / 2 + random() * (delay / 2) : delay;
}
