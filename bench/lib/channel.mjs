// How grapevine's task modules (running in its worker threads) report to the bench in
// the main thread of the same process: a BroadcastChannel. Completions are counted in
// the thread and posted at most every few ms, so reporting costs a counter increment
// per job, not a message. In a separate supervisor process nobody listens; harmless.
import { BroadcastChannel } from 'node:worker_threads';

export const CHANNEL_NAME = 'grapevine-bench';

// A BroadcastChannel builds every event it receives with undici's MessageEvent, even
// with no listener (each thread's channel receives the other threads' reports), and
// Node loads undici on the first one: 50-130 ms of that thread's CPU, which would
// otherwise land inside the first timed drain, once per thread and per supervisor
// process. This module is imported while threads boot (by the task modules) and
// before the supervisor starts (by the bench), so undici loads then. (grapevine's
// own MessagePorts use port.on('message'), which needs no MessageEvent.)
void globalThis.MessageEvent;
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

/**
 * Receives the threads' reports in the thread that asks (the supervisor's main
 * thread): `onReport` gets each message's data. Returns the channel, to close.
 */
export function listenToThreads(onReport) {
  const listener = new BroadcastChannel(CHANNEL_NAME);
  listener.onmessage = (event) => onReport(event.data);
  return listener;
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
