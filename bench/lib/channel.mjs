// How grapevine's task modules (running in its worker threads) report to the bench in
// the main thread of the same process: a BroadcastChannel. Completions are counted in
// the thread and posted at most every few ms, so reporting costs a counter increment
// per job, not a message. In a separate supervisor process nobody listens; harmless.
import { BroadcastChannel } from 'node:worker_threads';

export const CHANNEL_NAME = 'grapevine-bench';
const FLUSH_MS = 5;

let channel = null;
let pending = 0;
let timer = null;

function open() {
  if (!channel) {
    channel = new BroadcastChannel(CHANNEL_NAME);
    // Don't keep a thread (or the process) alive just for this channel.
    channel.unref?.();
  }
  return channel;
}

function flush() {
  timer = null;
  const n = pending;
  pending = 0;
  if (n > 0) open().postMessage({ kind: 'handled', count: n });
}

/** One more handler returned. */
export function reportHandled() {
  pending++;
  if (!timer) timer = setTimeout(flush, FLUSH_MS);
}

/** A latency job's handler started at monotonic ms `atMs`. Posted at once. */
export function reportLatencyStart(payload, atMs) {
  open().postMessage({ kind: 'latency', payload, atMs });
}

/** Machine-wide monotonic clock in ms (CLOCK_MONOTONIC: same in every thread and process). */
export function nowMs() {
  return Number(process.hrtime.bigint()) / 1e6;
}
