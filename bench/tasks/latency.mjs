// grapevine bench task: stamps the moment the handler starts (latency workload).
import { nowMs, reportHandled, reportLatencyStart } from '../lib/channel.mjs';

export default async function latency(payload) {
  reportLatencyStart(payload, nowMs());
  reportHandled();
}
