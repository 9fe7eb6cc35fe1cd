// Fixed, deterministic CPU work. Plain JS (.mjs) so grapevine's worker-thread task
// modules and the in-process handlers of the other systems run the very same work.
// The harness calibrates the iteration count to ~25 ms once per run, so every system
// does identical work and contention shows up as time, not as less work.
//
// PBKDF2 (OpenSSL, synchronous on the calling thread) rather than a JavaScript loop:
// a JS loop's speed depends on which V8 tier compiles it, and that differs per
// isolate — measured here, one xorshift loop ran at 9, 27 or 88 ms per call in
// different worker threads of the same process, for the same iteration count.
import { pbkdf2Sync } from 'node:crypto';

export function burn(iterations) {
  return pbkdf2Sync('grapevine', 'bench', Math.max(1, iterations), 32, 'sha256')[0];
}
