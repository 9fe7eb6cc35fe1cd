import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

export interface RunningPgBouncer {
  /** The target's URL with the host and port of PgBouncer (no password: it trusts local clients). */
  url: string;
  port: number;
  /** Stops PgBouncer and removes its configuration directory. */
  stop(): Promise<void>;
}

export interface PgBouncerOptions {
  /** Server connections per database and user (default_pool_size). */
  poolSize?: number;
}

/** Debian puts pgbouncer in /usr/sbin, which is not on every user's PATH. */
export function pgbouncerBinary(): string | null {
  for (const dir of [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin']) {
    const candidate = path.join(dir, 'pgbouncer');
    if (dir && existsSync(candidate)) return candidate;
  }
  return null;
}

/**
 * Starts a PgBouncer in transaction mode in front of `targetUrl`, on a free
 * port of 127.0.0.1, with its configuration in a temporary directory of its
 * own. It trusts its clients and logs in to the server as the target URL's
 * user (with its password, if any). PgBouncer refuses to run as root, so as
 * root it runs as the `postgres` user (or `nobody`).
 */
export async function startPgBouncer(targetUrl: string, options: PgBouncerOptions = {}): Promise<RunningPgBouncer> {
  const binary = pgbouncerBinary();
  if (!binary) throw new Error('pgbouncer is not installed: apt-get install -y pgbouncer');
  const target = new URL(targetUrl);
  const user = decodeURIComponent(target.username || 'postgres');
  const port = await freePort();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'grapevine-pgbouncer-'));
  const server = [`host=${target.hostname}`, `port=${target.port || 5432}`, `user=${user}`];
  if (target.password) server.push(`password=${decodeURIComponent(target.password)}`);
  const config = [
    '[databases]',
    `* = ${server.join(' ')}`,
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${port}`,
    'unix_socket_dir =',
    'auth_type = trust',
    `auth_file = ${path.join(dir, 'users.txt')}`,
    'pool_mode = transaction',
    `default_pool_size = ${options.poolSize ?? 20}`,
    'max_client_conn = 2000',
    // What pg may send at start-up besides the parameters PgBouncer tracks.
    'ignore_startup_parameters = extra_float_digits,options',
    'log_connections = 0',
    'log_disconnections = 0',
    `admin_users = ${user}`,
  ].join('\n');
  await writeFile(path.join(dir, 'pgbouncer.ini'), `${config}\n`);
  await writeFile(path.join(dir, 'users.txt'), `"${user}" ""\n`);
  // Readable by the user it switches to.
  await chmod(dir, 0o755);
  const runAs = process.getuid?.() === 0 ? ['-u', userExists('postgres') ? 'postgres' : 'nobody'] : [];
  const child = spawn(binary, [...runAs, path.join(dir, 'pgbouncer.ini')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4_000);
  });
  const url = new URL(targetUrl);
  url.hostname = '127.0.0.1';
  url.port = String(port);
  url.password = '';
  const running: RunningPgBouncer = {
    url: url.toString(),
    port,
    async stop() {
      await stopProcess(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    await untilAnswers(running.url, child, () => stderr);
  } catch (err) {
    await running.stop();
    throw err;
  }
  return running;
}

function userExists(name: string): boolean {
  try {
    return new RegExp(`^${name}:`, 'm').test(readFileSync('/etc/passwd', 'utf8'));
  } catch {
    return false;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/** Until a statement through PgBouncer is answered; fails with PgBouncer's own words if it exits first. */
async function untilAnswers(url: string, child: ChildProcess, stderr: () => string): Promise<void> {
  const exited = new Promise<never>((_, reject) => {
    child.once('exit', (code) => reject(new Error(`pgbouncer exited with code ${code}: ${stderr().trim()}`)));
  });
  exited.catch(() => {});
  for (let attempt = 0; ; attempt++) {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
    client.on('error', () => {});
    try {
      await Promise.race([client.connect().then(() => client.query('SELECT 1')), exited]);
      return;
    } catch (err) {
      if (child.exitCode !== null || attempt >= 100) throw err;
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      await client.end().catch(() => {});
    }
  }
}

function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    // SIGINT: PgBouncer's fast shutdown, closing its connections at once.
    child.kill('SIGINT');
  });
}
