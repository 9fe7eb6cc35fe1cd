import { describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.ts';
import type { RunningJob } from '../../supervisor/dispatcher.ts';
import { SupervisorEventBus } from '../../supervisor/events.ts';

/** A job that throws on any read: proof that the bus did not look at it. */
const untouchable = new Proxy({} as RunningJob, {
  get() {
    throw new Error('the bus read a job although nobody listens');
  },
});

describe('SupervisorEventBus with no listener', () => {
  it('reads no job and asks threads for no details', () => {
    const bus = new SupervisorEventBus(silentLogger());
    expect(() => bus.started([untouchable])).not.toThrow();
    expect(() => bus.finished([untouchable])).not.toThrow();
    expect(bus.wantsOutcomes()).toBe(false);
    // A listener for starts alone still asks for no failure details.
    const onStart = () => {};
    bus.on('job:started', onStart);
    expect(bus.wantsOutcomes()).toBe(false);
    bus.on('job:failed', onStart);
    expect(bus.wantsOutcomes()).toBe(true);
    bus.off('job:failed', onStart);
    expect(bus.wantsOutcomes()).toBe(false);
  });
});
