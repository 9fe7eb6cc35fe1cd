// grapevine bench task: the calibrated ~25 ms of synchronous CPU work (cpu workload).
import { burn } from '../lib/burn.mjs';
import { reportHandled } from '../lib/channel.mjs';

export default async function cpu(payload) {
  burn(payload.iterations);
  reportHandled();
}
