// In-process handler body shared by graphile-worker, pg-boss and BullMQ. grapevine's
// task modules in bench/tasks/ do the same work inside its worker threads.
import { burn } from '../lib/burn.mjs';
import { nowMs } from '../lib/stats.ts';
import type { BenchPayload, Probe, TaskName } from './types.ts';

export function runBenchTask(task: string, payload: BenchPayload, probe: Probe): void {
  switch (task as TaskName) {
    case 'latency':
      probe.latencyStart(payload, nowMs());
      break;
    case 'cpu':
      burn(payload.iterations ?? 0);
      break;
    case 'noop':
      break;
    default:
      throw new Error(`unknown bench task ${task}`);
  }
  probe.handled(1);
}
