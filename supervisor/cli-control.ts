import type { ControlResponse, LogEntry, SupervisorInfo } from '../src/control.ts';
import { GrapevineError } from '../src/errors.ts';
import { type CliTools, printable, printableJson, table, withControl } from './cli-output.ts';

export const CONTROL_HELP: Record<string, string> = {
  message: `Usage: grapevine message COMMAND [ARG] [--supervisor ID ...] [--wait SECONDS]

Sends a control message to running supervisors (default: every live one) and
prints each one's response. Exit code 1 if any answered with an error or did
not answer in time.

  --supervisor ID    send to this supervisor only (repeatable; ids: grapevine supervisors)
  --wait SECONDS     how long to wait for responses (default 10; 0 = print the
                     message id and do not wait)

Commands:
  PING               answers PONG
  ECHO TEXT          logs TEXT, answers OK
  INFO               supervisor id, host, pid, versions, schema, queues, threads, ...
  PAUSE / RESUME     stop / restart claiming jobs (running jobs finish)
  TIMEOUT_SET SECS   stop gracefully after SECS without a job ("none" = never)
  TIMEOUT_GET        the idle timeout and the time left, in seconds
  REFRESH            replace the threads, so changed task code is loaded
  SCALE N            run N threads from now on
  STOP [REASON]      graceful stop
  EVAL CODE          run JavaScript on the supervisor (only with run --allow-eval)`,
  supervisors: `Usage: grapevine supervisors [--json]

Lists the registered supervisors: id, status (IDLE, BUSY, PAUSED, EXITED,
LOST), host, pid, threads and what each thread is running.`,
  log: `Usage: grapevine log [--supervisor ID] [-n N] [--follow]

Prints the supervisors' event log (ALIVE, TASK_START, MESSAGE, PAUSE, STOP, ...).

  --supervisor ID   one supervisor only
  -n N              how many of the newest entries (default 20)
  --follow          keep printing new entries until interrupted`,
};

export function controlCommands(tools: CliTools): Record<string, (command: string, argv: string[]) => Promise<number>> {
  const { parse, int, usage } = tools;
  return {
    async message(command, argv) {
      const { values, positionals } = parse(command, argv, {
        supervisor: { type: 'string', multiple: true },
        wait: { type: 'string' },
      });
      const [name, arg, extra] = positionals;
      if (!name) throw usage('missing COMMAND: grapevine message COMMAND [ARG], e.g. grapevine message PING');
      if (extra !== undefined) throw usage(`unexpected argument ${JSON.stringify(extra)}: quote ARG if it contains spaces`);
      const wait = values.wait === undefined ? 10 : Number(values.wait);
      if (!Number.isFinite(wait) || wait < 0) throw usage(`--wait must be a number of seconds >= 0, got ${JSON.stringify(values.wait)}`);
      const supervisors = values.supervisor as string[] | undefined;
      return withControl(values, tools, async (control) => {
        const id = await control.send(name, arg, { supervisors });
        if (wait === 0) {
          console.log(id);
          return 0;
        }
        let responses: Record<string, ControlResponse>;
        let missing: GrapevineError | null = null;
        try {
          responses = await control.getResponse(id, { timeoutMs: wait * 1000 });
        } catch (err) {
          if (!(err instanceof GrapevineError) || err.code !== 'GRAPEVINE_RESPONSE_MISSING') throw err;
          // Print whoever did answer before reporting who did not.
          missing = err;
          responses = {};
          for (const [supervisor, answered] of Object.entries(await control.hasResponse(id))) {
            if (answered) Object.assign(responses, await control.getResponse(id, { supervisor }));
          }
        }
        let failed = missing !== null;
        for (const [supervisor, response] of Object.entries(responses)) {
          if (!response.ok) failed = true;
          console.log(formatResponse(supervisor, response));
        }
        if (missing) tools.say(missing.message);
        return failed ? 1 : 0;
      });
    },

    async supervisors(command, argv) {
      const { values, positionals } = parse(command, argv, { json: { type: 'boolean' } });
      if (positionals.length > 0)
        throw usage(`unexpected argument ${JSON.stringify(positionals[0])}: grapevine supervisors takes no arguments`);
      return withControl(values, tools, async (control) => {
        const supervisors = await control.supervisors();
        if (values.json) console.log(JSON.stringify(supervisors, null, 2));
        else console.log(formatSupervisors(supervisors));
        return 0;
      });
    },

    async log(command, argv) {
      const { values, positionals } = parse(command, argv, {
        supervisor: { type: 'string' },
        n: { type: 'string', short: 'n' },
        follow: { type: 'boolean', short: 'f' },
      });
      if (positionals.length > 0)
        throw usage(`unexpected argument ${JSON.stringify(positionals[0])}: use --supervisor ID to pick a supervisor`);
      const n = int(values, 'n') ?? 20;
      if (n < 1 || n > 100_000) throw usage('-n must be from 1 to 100000');
      const supervisor = values.supervisor as string | undefined;
      return withControl(values, tools, async (control) => {
        const entries = await control.logTail({ supervisor, n });
        for (const entry of entries) console.log(formatLogEntry(entry));
        if (!values.follow) return 0;
        const stop = await control.followLog({ supervisor, afterId: entries.at(-1)?.id ?? '0' }, (entry) =>
          console.log(formatLogEntry(entry)),
        );
        await new Promise<void>((resolve) => {
          process.once('SIGINT', resolve);
          process.once('SIGTERM', resolve);
        });
        await stop();
        return 0;
      });
    },
  };
}

export function formatResponse(supervisor: string, response: ControlResponse): string {
  if (!response.ok) return printable(`${supervisor}: ERROR ${response.error?.code}: ${response.error?.message}`);
  const { value } = response;
  if (typeof value === 'string') return printable(`${supervisor}: ${value}`);
  const text = printableJson(value);
  return text.includes('\n') ? `${supervisor}:\n${indent(text)}` : `${supervisor}: ${text}`;
}

export function formatSupervisors(supervisors: SupervisorInfo[]): string {
  if (supervisors.length === 0) return '(no supervisors registered)';
  const rows = supervisors.map((w) => [
    w.id,
    w.status,
    w.host,
    String(w.pid),
    `${w.threads}x${w.concurrency}`,
    connectionsColumn(w),
    w.heartbeatAt.toISOString(),
  ]);
  const header = ['ID', 'STATUS', 'HOST', 'PID', 'THREADS', 'CONNECTIONS', 'HEARTBEAT'];
  const lines = table(header, rows).split('\n');
  const out = [lines[0]];
  supervisors.forEach((w, i) => {
    out.push(lines[i + 1]);
    if (w.status === 'EXITED' || w.status === 'LOST') return;
    for (const t of w.threadStates) {
      const jobs = t.currentJobs.length > 0 ? `running ${t.currentJobs.join(',')}` : 'idle';
      out.push(`    thread ${t.threadId}  ${jobs}  jobs run ${t.jobsRun}`);
    }
    if (w.restarts > 0) out.push(`    restarts ${w.restarts}`);
  });
  return out.join('\n');
}

/** In use of the budget, and the LISTEN connection if it has one (none in poll mode): "3/8 +listen". */
function connectionsColumn(w: SupervisorInfo): string {
  const c = w.connections;
  if (!c || w.status === 'EXITED' || w.status === 'LOST') return '-';
  return `${c.inUse}/${c.max}${c.listen > 0 ? ' +listen' : ''}${c.waiting > 0 ? ` (${c.waiting} waiting)` : ''}`;
}

export function formatLogEntry(entry: LogEntry): string {
  const thread = entry.thread === null ? '' : ` [thread ${entry.thread}]`;
  // Details quote message text (an ECHO's, say), which must not drive the terminal.
  return printable(`[${entry.at.toISOString()}] ${entry.supervisor} ${entry.event}${entry.detail ? ` ${entry.detail}` : ''}${thread}`);
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n');
}
