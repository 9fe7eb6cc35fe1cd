// Fixed, deterministic CPU work. Plain JS (.mjs) so grapevine's worker-thread task
// modules and the in-process handlers of the other systems run the very same loop.
// The harness calibrates the iteration count to ~25 ms once per run, so every system
// does identical work and contention shows up as time, not as less work.
export function burn(iterations) {
  let x = 0x9e3779b9 | 0;
  for (let i = 0; i < iterations; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x = (x + i) | 0;
  }
  return x;
}
