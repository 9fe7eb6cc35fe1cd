import { randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import { DEFAULTS, validateSchemaName } from '../config.ts';
import { createControl, type JobFilter } from '../control.ts';
import { clientConnections, type ConnectionOptions } from '../db.ts';
import { GrapevineError } from '../errors.ts';
import { jobFromRow, type Job, type JobState } from '../job.ts';
import { explainPermissionDenied } from '../operations.ts';
import { silentLogger, type Logger } from '../log.ts';
import { redactSecret } from '../redact.ts';
import { channelsFor } from '../schema/channels.ts';
import { createSchedules } from '../schedules.ts';
import { limitsText } from '../queues.ts';
import { jobTimeline, queueActivity, stateCounts, stateEstimate } from '../sql/dashboard.ts';
import { findJob } from '../sql/jobs.ts';
import { watchProgress } from '../sql/progress.ts';
import { PACKAGE_ROOT, VERSION } from '../version.ts';
import { LiveUpdates } from './live.ts';

export interface DashboardOptions extends ConnectionOptions {
  /** Defaults to "grapevine". */
  schema?: string;
  /** Where the dashboard is mounted, e.g. "/admin/jobs" (default "/"). */
  basePath?: string;
  /** Hide and refuse every action (retry, cancel, pause): for a role that may only look. */
  readOnly?: boolean;
  /** Apply migrations before first use (default true), as the control client does. */
  migrate?: boolean;
  /** How often the overview is refreshed for the browsers watching it (default DEFAULTS.dashboardRefreshMs). */
  refreshMs?: number;
  logger?: Logger;
}

/** A Node request listener (also usable as Express/Connect middleware: it calls `next` for paths outside basePath). */
export interface DashboardHandler {
  (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void): void;
  close(): Promise<void>;
}

const STATIC_DIR = path.join(PACKAGE_ROOT, 'src', 'dashboard', 'static');
const STATIC: Record<string, string> = {
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
};
/** A job page marks its job's progress as watched for this long (renewed by each read once half is gone). */
const PROGRESS_WATCH_MS = 30_000;
/** Exact state counts below this many rows; above, the planner's estimate (counting millions of rows takes seconds). */
const EXACT_COUNT_ROWS = 50_000;
const PREVIEW_CHARS = 160;
/** Known errors answer 400 (bad input) unless listed; *_NOT_FOUND answer 404. */
const ERROR_STATUS: Record<string, number> = { GRAPEVINE_DATABASE_UNREACHABLE: 503, GRAPEVINE_PERMISSION_DENIED: 403 };
const MAX_BODY_BYTES = 4096;
const SECURITY_HEADERS = {
  // Scripts and styles only from the dashboard's own files: user data that
  // slipped into markup could still not run.
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

/**
 * The dashboard as one request handler: a static page (plain ES module, no
 * build step) and a small JSON API under basePath, live updates over
 * server-sent events (src/dashboard/live.ts). Actions are POSTs that must
 * carry this process's CSRF token in a header and come from the same origin.
 * It has no login of its own: mount it behind the application's, or keep the
 * standalone server (`grapevine dashboard`) on localhost.
 */
export function createDashboardHandler(options: DashboardOptions = {}): DashboardHandler {
  const schema = validateSchemaName(options.schema ?? DEFAULTS.schema);
  const base = normaliseBase(options.basePath ?? '/');
  const readOnly = options.readOnly ?? false;
  const logger = options.logger ?? silentLogger();
  const refreshMs = options.refreshMs ?? DEFAULTS.dashboardRefreshMs;
  if (!Number.isInteger(refreshMs) || refreshMs < 100 || refreshMs > 3_600_000) {
    throw new GrapevineError(
      'GRAPEVINE_CONFIG_INVALID',
      `refreshMs must be an integer from 100 to 3600000 (milliseconds), got ${JSON.stringify(options.refreshMs)}`,
    );
  }
  const { connectionString, listen, pool } = clientConnections(options, { max: 4, applicationName: 'grapevine-dashboard' });
  const control = createControl({ ...options, pool, schema, logger });
  const schedules = createSchedules({ pool, schema, migrate: options.migrate });
  const csrf = randomBytes(24).toString('base64url');
  const page = readFileSync(path.join(STATIC_DIR, 'index.html'), 'utf8')
    .replaceAll('{{base}}', escapeHtml(base))
    .replaceAll('{{csrf}}', escapeHtml(csrf))
    .replaceAll('{{readonly}}', readOnly ? 'true' : 'false')
    .replaceAll('{{schema}}', escapeHtml(schema))
    // The static files are cached for a few minutes: a new version's page asks for new ones.
    .replaceAll('{{version}}', encodeURIComponent(VERSION));
  const files = new Map(Object.keys(STATIC).map((name) => [name, readFileSync(path.join(STATIC_DIR, name))]));

  /** Per queue, exact; per state, exact on a small table and estimated on a big one. */
  // Migrates (unless migrate: false) before the dashboard's own statements, as every control call does.
  let readied: Promise<unknown> | null = null;
  const ready = () =>
    (readied ??= control.supervisors().catch((err) => {
      readied = null;
      throw err;
    }));

  const overview = async () => {
    await ready();
    const [queues, estimate, supervisors] = await Promise.all([
      queueActivity(pool, schema),
      stateEstimate(pool, schema),
      control.supervisors(),
    ]);
    const live = {
      pending: queues.reduce((n, q) => n + q.due + q.scheduled, 0),
      running: queues.reduce((n, q) => n + q.running, 0),
    };
    let states: Record<string, number>;
    let estimated = false;
    if (estimate.rows < EXACT_COUNT_ROWS) {
      states = Object.fromEntries((await stateCounts(pool, schema)).map((r) => [r.state, r.jobs]));
    } else {
      estimated = true;
      states = Object.fromEntries(
        ['succeeded', 'failed', 'cancelled'].map((s) => [s, Math.round((estimate.shares[s] ?? 0) * estimate.rows)]),
      );
      Object.assign(states, live);
    }
    return {
      at: new Date(),
      states: { pending: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0, ...states },
      estimated,
      queues: queues.map((q) => ({ ...q, limits: limitsText(q) })),
      supervisors,
    };
  };

  const live = new LiveUpdates({
    listen,
    channels: [channelsFor(schema).jobs, channelsFor(schema).done],
    progressChannel: channelsFor(schema).progress,
    logger,
    snapshot: overview,
    intervalMs: refreshMs,
  });

  const api: Record<string, (req: IncomingMessage, url: URL, id: string | null) => Promise<unknown>> = {
    'GET overview': () => overview(),
    'GET jobs': async (_req, url) => {
      const q = url.searchParams;
      const found = await control.listJobs(filterFrom(q), {
        limit: q.has('limit') ? Number(q.get('limit')) : 50,
        after: q.get('after') || null,
      });
      return { jobs: found.jobs.map(summary), next: found.next };
    },
    'GET jobs one': async (_req, _url, id) => {
      await ready();
      const row = await findJob(pool, schema, { id: id! });
      if (!row) throw new GrapevineError('GRAPEVINE_JOB_NOT_FOUND', `job ${id} does not exist in schema "${schema}" (or was purged)`);
      // Someone looks at a job that may still report progress: its writes are
      // announced (on the progress channel this process LISTENs to) while
      // the page keeps reading it.
      if (row.state === 'pending' || row.state === 'running') {
        const seen = await watchProgress(pool, schema, { id: id!, watchMs: PROGRESS_WATCH_MS });
        if (seen) Object.assign(row, seen);
      }
      const timeline = await jobTimeline(pool, schema, { id: id! });
      return { job: jobFromRow(row), timeline };
    },
    'GET supervisors': () => control.supervisors(),
    'GET schedules': () => schedules.list(),
    'POST jobs retry': async (_req, _url, id) => ({ retried: await control.retryJobs([id!]) }),
    'POST jobs cancel': async (_req, _url, id) => control.cancelJobs([id!]),
    // Every job the list's filter matches (an empty filter is refused by the operations themselves).
    'POST matching retry': async (_req, url) => ({ retried: (await control.retryJobs(filterFrom(url.searchParams))).length }),
    'POST matching cancel': async (_req, url) => {
      const { cancelled, cancelling } = await control.cancelJobs(filterFrom(url.searchParams));
      return { cancelled: cancelled.length, cancelling: cancelling.length };
    },
    'POST supervisors pause': async (_req, _url, id) => ({ message: await control.send('PAUSE', undefined, { supervisors: [id!] }) }),
    'POST supervisors resume': async (_req, _url, id) => ({ message: await control.send('RESUME', undefined, { supervisors: [id!] }) }),
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void) => {
    const full = (req as { originalUrl?: string }).originalUrl ?? req.url ?? '/';
    const url = new URL(full, 'http://dashboard.invalid');
    const inside =
      base === '' ? url.pathname : url.pathname.startsWith(`${base}/`) || url.pathname === base ? url.pathname.slice(base.length) : null;
    if (inside === null) {
      if (next) return next();
      return send(res, 404, 'text/plain; charset=utf-8', 'not found');
    }
    if (inside === '') return redirect(res, `${base}/`);
    if (inside === '/' && req.method === 'GET') return send(res, 200, 'text/html; charset=utf-8', page);
    const file = /^\/static\/([a-z.]+)$/.exec(inside)?.[1];
    if (file && files.has(file) && req.method === 'GET') return send(res, 200, STATIC[file], files.get(file)!, 'public, max-age=300');
    if (inside === '/api/events' && req.method === 'GET') return live.attach(req, res);

    const route = routeOf(inside);
    const fn = route ? api[`${req.method} ${route.action}`] : undefined;
    if (!route || !fn) return json(res, 404, { error: { code: 'NOT_FOUND', message: `no such page: ${req.method} ${inside}` } });
    if (req.method === 'POST') {
      const refused = readOnly ? 'the dashboard is read-only' : forgedRequest(req, csrf);
      if (refused) return json(res, 403, { error: { code: 'GRAPEVINE_PERMISSION_DENIED', message: refused } });
      await readBody(req);
    }
    try {
      const id = route.id === null ? null : decodeURIComponent(route.id);
      if (id !== null && route.action.startsWith('jobs') && !/^[1-9][0-9]{0,18}$/.test(id)) {
        throw new GrapevineError('GRAPEVINE_CONFIG_INVALID', `invalid job id ${JSON.stringify(id)}: job ids are positive integers`);
      }
      json(res, 200, await fn(req, url, id));
    } catch (thrown) {
      // Its own reads refused too: the connection's role is not an operator.
      const err = explainPermissionDenied(thrown, schema);
      const e = err as { code?: string; message?: string };
      const known = err instanceof GrapevineError;
      if (!known) logger.warn({ err: redactSecret(String(e.message), connectionString) }, 'dashboard request failed');
      const status = !known ? 500 : e.code?.endsWith('NOT_FOUND') ? 404 : (ERROR_STATUS[e.code ?? ''] ?? 400);
      json(res, status, { error: { code: e.code ?? 'INTERNAL', message: redactSecret(String(e.message), connectionString) } });
    }
  };

  const handler = ((req, res, next) => {
    handle(req, res, next).catch((err: Error) => {
      logger.warn({ err: redactSecret(err.message, connectionString) }, 'dashboard request failed');
      if (!res.headersSent) json(res, 500, { error: { code: 'INTERNAL', message: 'internal error' } });
      else res.end();
    });
  }) as DashboardHandler;
  handler.close = async () => {
    await live.close();
    await schedules.close();
    await control.close();
    if (!options.pool) await pool.end();
  };
  return handler;
}

/** The API route a path names: "jobs", "jobs one" (with its id), "jobs retry", "matching retry", ... */
function routeOf(inside: string): { action: string; id: string | null } | null {
  const list = /^\/api\/(overview|jobs|supervisors|schedules)$/.exec(inside);
  if (list) return { action: list[1], id: null };
  const bulk = /^\/api\/matching\/(retry|cancel)$/.exec(inside);
  if (bulk) return { action: `matching ${bulk[1]}`, id: null };
  const one = /^\/api\/(jobs|supervisors)\/([^/]+)(?:\/([a-z]+))?$/.exec(inside);
  if (one) return { action: `${one[1]} ${one[3] ?? 'one'}`, id: one[2] };
  return null;
}

/**
 * A POST the page itself did not send. The token is in the page, which
 * another origin cannot read; a custom header also cannot be sent across
 * origins without a CORS preflight, which this handler never grants. The
 * browser's Origin and Sec-Fetch-Site headers are checked too where sent.
 */
function forgedRequest(req: IncomingMessage, csrf: string): string | null {
  const token = Buffer.from(String(req.headers['x-grapevine-csrf'] ?? ''));
  const expected = Buffer.from(csrf);
  if (token.length !== expected.length || !timingSafeEqual(token, expected)) return 'missing or wrong CSRF token: reload the page';
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin') return `cross-site request refused (Sec-Fetch-Site: ${site})`;
  const origin = req.headers.origin;
  if (origin !== undefined && origin !== 'null') {
    let host: string | null = null;
    try {
      host = new URL(origin).host;
    } catch {}
    if (host !== req.headers.host) return 'cross-origin request refused';
  }
  return null;
}

/** Actions take no body; one is drained (and bounded) so the connection can be reused. */
async function readBody(req: IncomingMessage): Promise<void> {
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) break;
  }
}

function filterFrom(q: URLSearchParams): JobFilter {
  const text = (name: string) => q.get(name) || undefined;
  const states = q
    .getAll('state')
    .flatMap((s) => s.split(','))
    .filter(Boolean);
  return {
    state: states.length > 0 ? (states as JobState[]) : undefined,
    task: text('task'),
    queue: text('queue'),
    key: text('key'),
    group: text('group'),
    createdAfter: text('since'),
    createdBefore: text('until'),
    errorContains: text('error'),
  };
}

/** A list row: the payload cut to a preview, the result left out (both can be large). */
function summary(job: Job) {
  const payload = JSON.stringify(job.payload) ?? '';
  const { payload: _p, result: _r, ...rest } = job;
  return {
    ...rest,
    lastError: job.lastError === null ? null : job.lastError.split('\n')[0].slice(0, PREVIEW_CHARS),
    payloadPreview: payload.length > PREVIEW_CHARS ? `${payload.slice(0, PREVIEW_CHARS)}…` : payload,
  };
}

function normaliseBase(basePath: string): string {
  if (typeof basePath !== 'string' || !/^\/[A-Za-z0-9._~/-]*$/.test(basePath) || basePath.includes('//')) {
    throw new GrapevineError(
      'GRAPEVINE_CONFIG_INVALID',
      `basePath must be a URL path such as "/" or "/admin/jobs" (letters, digits, . _ ~ - /), got ${JSON.stringify(basePath)}`,
    );
  }
  return basePath.replace(/\/+$/, '');
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function send(res: ServerResponse, status: number, type: string, body: string | Buffer, cache = 'no-store'): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': type, 'cache-control': cache });
  res.end(body);
}

function json(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(value));
}

function redirect(res: ServerResponse, to: string): void {
  res.writeHead(302, { ...SECURITY_HEADERS, location: to });
  res.end();
}
