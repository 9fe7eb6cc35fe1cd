// grapevine bench task: does nothing (throughput, scale-out, deep queue).
import { reportHandled } from '../lib/channel.mjs';

export default async function noop() {
  reportHandled();
}
