// grapevine bench task: holds its slot for payload.ms (the limits bench), then reports.
import { reportHandled } from '../lib/channel.mjs';

export default async function hold(payload) {
  if (payload?.ms > 0) await new Promise((resolve) => setTimeout(resolve, payload.ms));
  reportHandled();
}
