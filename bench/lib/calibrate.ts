// Finds how many iterations of lib/burn.mjs take `targetMs` of CPU on this machine,
// once per run, so every system is handed exactly the same amount of work per job.
import { burn } from './burn.mjs';
import { nowMs } from './stats.ts';

export function calibrateBurn(targetMs: number): number {
  let iterations = 1_000;
  // Warm the JIT, then grow until one call is long enough to time reliably.
  for (let i = 0; i < 5; i++) burn(iterations);
  for (;;) {
    const t0 = nowMs();
    burn(iterations);
    if (nowMs() - t0 > 5) break;
    iterations *= 2;
  }
  // Best of several: a run that was preempted (another process, GC) only looks slower,
  // never faster, so the fastest one is the cost of the work itself.
  let best = 0;
  for (let i = 0; i < 15; i++) {
    const t0 = nowMs();
    burn(iterations);
    best = Math.max(best, iterations / (nowMs() - t0));
  }
  return Math.round(best * targetMs);
}
