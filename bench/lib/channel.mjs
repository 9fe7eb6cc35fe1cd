// How grapevine's task modules (running in its worker threads) report to the bench in
// the main thread of the same process: a BroadcastChannel. Completions are counted in
// the thread and posted at most every few ms, so reporting costs a counter increment
// per job, not a message. In a separate supervisor process nobody listens; harmless.
import { BroadcastChannel } from 'node:worker_threads';

export const CHANNEL_NAME = 'grapevine-bench';

const FLUSH_MS = 5;

let pending = 0;
let timer = null;

// A BroadcastChannel builds every event it receives with undici's MessageEvent, even
// with no listener, and Node loads undici, at a noticeable CPU cost, on the first one. A channel
// kept open in each thread would receive the other threads' reports: undici would
// load in every thread, inside the first timed drain, and every report would cost
// every thread an event. So a thread opens a channel only to post, and closes it at
// once. (grapevine's own MessagePorts use port.on('message'), which needs no
// MessageEvent.)
function post(message) {
  const channel = new BroadcastChannel(CHANNEL_NAME);
  channel.postMessage(message);
  channel.close();
}

function flush() {
  timer = null;
  const n = pending;
  pending = 0;
  if (n > 0) post({ kind: 'handled', count: n });
}

/**
 * Receives the threads' reports in the thread that asks (the supervisor's main
 * thread): `onReport` gets each message's data. Returns the channel, to close.
 */
export function listenToThreads(onReport) {
  // The listener is the one place that receives: undici loads now, before the clock starts.
  void globalThis.MessageEvent;
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
  post({ kind: 'latency', payload, atMs });
}

/** A handler is about to end its thread, at monotonic ms `atMs` (the recovery workload). Posted at once. */
export function reportKilled(jobId, atMs) {
  post({ kind: 'killed', jobId, atMs });
}

/** Machine-wide monotonic clock in ms (CLOCK_MONOTONIC: same in every thread and process). */
export function nowMs() {
  return Number(process.hrtime.bigint()) / 1e6;
}
