/**
 * `grapevine queue set|list|pause|resume`: queue limits and the fleet-wide
 * pause, stored in the database (docs/limits.md). Registered in cli.ts.
 */
import { rateText, type QueueInfo, type QueueSettings } from '../src/queues.ts';
import { type CliTools, printable, table, type Values, withControl } from './cli-output.ts';

export const QUEUE_HELP: Record<string, string> = {
  queue: `Usage: grapevine queue set QUEUE [--concurrency N] [--group-concurrency N] [--rate N/INTERVAL]
                           [--group-rate N/INTERVAL]
       grapevine queue list [--json]
       grapevine queue pause|resume QUEUE

Limits and pauses shared by every supervisor, enforced in the claim
(docs/limits.md). A value of none removes a limit.

  set     change the queue's limits (the others stay)
  list    every queue with a setting or a job: its limits, jobs by state and
          how long its oldest due job has waited
  pause   no supervisor starts the queue's jobs until resume (running ones go on)
  resume  start them again

  --concurrency N          jobs of the queue running at once, across all supervisors
  --group-concurrency N    jobs of one group (add --group G) running at once; 1 runs
                           each group's jobs one at a time, in order
  --rate N/INTERVAL        at most N starts in any INTERVAL: 10/s, 100/m, 5/500ms, 2/10s
  --group-rate N/INTERVAL  the same for each group`,
};

export function queueCommands(tools: CliTools): Record<string, (command: string, argv: string[]) => Promise<number>> {
  const { parse, usage } = tools;
  return {
    async queue(command, argv) {
      const { values, positionals } = parse(command, argv, {
        concurrency: { type: 'string' },
        'group-concurrency': { type: 'string' },
        rate: { type: 'string' },
        'group-rate': { type: 'string' },
        json: { type: 'boolean' },
      });
      const [action, name, extra] = positionals;
      if (action === 'set') {
        if (!name || extra !== undefined)
          throw usage('usage: grapevine queue set QUEUE [--concurrency N] [--group-concurrency N] [--rate N/INTERVAL]');
        const settings = settingsOf(values);
        if (Object.keys(settings).length === 0) {
          throw usage('grapevine queue set needs --concurrency, --group-concurrency, --rate or --group-rate');
        }
        return withControl(values, tools, async (control) => {
          const set = await control.setQueue(name, settings);
          tools.say(`queue "${printable(set.queue)}": ${describe(set)}`);
          return 0;
        });
      }
      if (action === 'pause' || action === 'resume') {
        if (!name || extra !== undefined) throw usage(`usage: grapevine queue ${action} QUEUE`);
        return withControl(values, tools, async (control) => {
          const set = action === 'pause' ? await control.pauseQueue(name) : await control.resumeQueue(name);
          tools.say(`queue "${printable(set.queue)}" ${set.paused ? 'paused on every supervisor' : 'resumed'}`);
          return 0;
        });
      }
      if (action === 'list') {
        if (name !== undefined) throw usage('usage: grapevine queue list [--json]');
        return withControl(values, tools, async (control) => {
          const queues = await control.listQueues();
          console.log(values.json ? JSON.stringify(queues, null, 2) : formatList(queues));
          return 0;
        });
      }
      throw usage(
        `${action === undefined ? 'missing action' : `unknown action ${JSON.stringify(action)}`}: grapevine queue set|list|pause|resume (see grapevine queue --help)`,
      );
    },
  };
}

/** The flags given, as setQueue() takes them: "none" removes a limit; other text is checked there. */
function settingsOf(values: Values): QueueSettings {
  const settings: Record<string, unknown> = {};
  const read = (flag: string, field: keyof QueueSettings, numeric: boolean) => {
    const raw = values[flag];
    if (typeof raw !== 'string') return;
    if (raw === 'none') settings[field] = null;
    else settings[field] = numeric && /^\d+$/.test(raw) ? Number(raw) : raw;
  };
  read('concurrency', 'concurrency', true);
  read('group-concurrency', 'groupConcurrency', true);
  read('rate', 'rate', false);
  read('group-rate', 'groupRate', false);
  return settings as QueueSettings;
}

function describe(q: Omit<QueueInfo, 'jobs' | 'oldestPendingSeconds'>): string {
  return `concurrency ${q.concurrency ?? '-'}, group concurrency ${q.groupConcurrency ?? '-'}, rate ${rateText(q.rate)}, group rate ${rateText(q.groupRate)}${q.paused ? ', PAUSED' : ''}`;
}

function formatList(queues: QueueInfo[]): string {
  if (queues.length === 0) return '(no queues)';
  return table(
    ['QUEUE', 'PAUSED', 'CONC', 'GROUP', 'RATE', 'GROUP RATE', 'PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED', 'OLDEST DUE'],
    queues.map((q) => [
      printable(q.queue),
      q.paused ? 'yes' : 'no',
      String(q.concurrency ?? '-'),
      String(q.groupConcurrency ?? '-'),
      rateText(q.rate),
      rateText(q.groupRate),
      String(q.jobs.pending),
      String(q.jobs.running),
      String(q.jobs.succeeded),
      String(q.jobs.failed),
      String(q.jobs.cancelled),
      q.oldestPendingSeconds === null ? '-' : `${q.oldestPendingSeconds.toFixed(1)}s`,
    ]),
  );
}
