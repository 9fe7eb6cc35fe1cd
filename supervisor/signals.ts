import type { Logger } from 'pino';
import type { Supervisor } from './supervisor.ts';

/**
 * First SIGTERM/SIGINT: graceful stop (running jobs get the grace period).
 * Second: stop now, releasing whatever still runs. Only `grapevine run`
 * installs this; a service that embeds a supervisor owns its own signals.
 */
export function stopOnSignals(supervisor: Supervisor, logger: Logger): () => void {
  let received = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    received++;
    if (received === 1) {
      logger.info({ signal }, 'signal received: stopping gracefully (send it again to stop now)');
      void supervisor.stop({ reason: signal });
    } else {
      logger.warn({ signal }, 'second signal: stopping now');
      void supervisor.stop({ graceMs: 0, reason: signal });
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return () => {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  };
}
