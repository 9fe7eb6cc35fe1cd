/**
 * `grapevine dashboard`: the web dashboard (src/dashboard/handler.ts) on a
 * port of its own, until SIGINT or SIGTERM. Registered in cli.ts.
 */
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DEFAULTS } from '../src/config.ts';
import { createDashboardHandler } from '../src/dashboard/handler.ts';
import { createLogger } from '../src/log.ts';
import { describeConnection } from '../src/redact.ts';
import type { CliTools } from './cli-output.ts';

export const DASHBOARD_HELP: Record<string, string> = {
  dashboard: `Usage: grapevine dashboard [--port N] [--host H] [--read-only] [--base-path P]

Serves the web dashboard: queues, jobs with filters, each job's payload, error
and timeline, supervisors and their threads, schedules, live; and retry,
cancel and pause behind a confirmation. It has no login: it listens on this
host only unless --host says otherwise, so put it behind your own.

  --port N        the port (default ${DEFAULTS.dashboardPort}; 0 picks a free one)
  --host H        the address to listen on (default ${DEFAULTS.dashboardHost})
  --read-only     show everything, allow no action
  --base-path P   serve under this path, e.g. /jobs (default /)`,
};

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export function dashboardCommands(tools: CliTools): Record<string, (command: string, argv: string[]) => Promise<number>> {
  return {
    async dashboard(command, argv) {
      const { values, positionals } = tools.parse(command, argv, {
        port: { type: 'string' },
        host: { type: 'string' },
        'read-only': { type: 'boolean' },
        'base-path': { type: 'string' },
      });
      if (positionals.length > 0)
        throw tools.usage(`unexpected argument ${JSON.stringify(positionals[0])}: grapevine dashboard takes options only`);
      const port = tools.int(values, 'port') ?? DEFAULTS.dashboardPort;
      if (port < 0 || port > 65_535) throw tools.usage(`--port must be an integer from 0 to 65535, got ${port}`);
      const host = (values.host as string | undefined) ?? DEFAULTS.dashboardHost;
      const db = await tools.database(values);
      const logger = createLogger({ level: 'warn', format: process.stdout.isTTY ? 'pretty' : 'json' });
      const handler = createDashboardHandler({
        connectionString: db.connectionString,
        listenUrl: db.listenUrl,
        preparedStatements: db.preparedStatements,
        schema: values.schema as string | undefined,
        readOnly: values['read-only'] === true,
        basePath: values['base-path'] as string | undefined,
        logger,
      });
      const server = createServer((req, res) => {
        // On a loopback address, a page elsewhere that points its own host
        // name at 127.0.0.1 (DNS rebinding) would count as same-origin:
        // only requests naming a loopback host are answered.
        if (LOOPBACK.has(host) && !LOOPBACK.has(hostName(req))) {
          res.writeHead(421, { 'content-type': 'text/plain; charset=utf-8' });
          res.end('this dashboard answers to localhost only (see --host)');
          return;
        }
        handler(req, res);
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, resolve);
      });
      const { port: bound } = server.address() as AddressInfo;
      const shown = host.includes(':') ? `[${host}]` : host;
      const base = ((values['base-path'] as string | undefined) ?? '/').replace(/\/*$/, '/');
      // The connection is described without its password.
      tools.say(`dashboard for ${describeConnection(db.connectionString)} at http://${shown}:${bound}${base}`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await handler.close();
      await db.release();
      return 0;
    },
  };
}

function hostName(req: IncomingMessage): string {
  const host = req.headers.host ?? '';
  try {
    return new URL(`http://${host}`).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return '';
  }
}
