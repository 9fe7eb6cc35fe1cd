/**
 * The commands examples/deploy/Dockerfile and examples/deploy/grapevine.service
 * start, run as docker and systemd would: as the main process, stopped with
 * their stop signal. No container engine runs here, so the test runs the
 * command itself, in a folder laid out like the image's or the unit's.
 */
import { mkdtemp, mkdir, readFile, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../supervisor/public.ts';
import { eventually, FIXTURE_TASKS, useMigratedSchema, type MigratedTestDatabase } from './helpers/db.ts';
import { ROOT, start } from './helpers/process.ts';

const DEPLOY = path.join(ROOT, 'examples/deploy');

interface StartCommand {
  argv: string[];
  workdir: string;
  stopSignal: string;
}

async function dockerCommand(): Promise<StartCommand> {
  const text = await readFile(path.join(DEPLOY, 'Dockerfile'), 'utf8');
  const instruction = (name: string) => {
    const match = new RegExp(`^${name}\\s+(.+)$`, 'm').exec(text);
    if (!match) throw new Error(`the Dockerfile has no ${name}`);
    return match[1].trim();
  };
  // Exec form only: a JSON array. Shell form would put sh between the signal and the supervisor.
  const exec = (name: string) => JSON.parse(instruction(name)) as string[];
  return { argv: [...exec('ENTRYPOINT'), ...exec('CMD')], workdir: instruction('WORKDIR'), stopSignal: instruction('STOPSIGNAL') };
}

async function systemdCommand(): Promise<StartCommand & { timeoutStopSec: number }> {
  const text = await readFile(path.join(DEPLOY, 'grapevine.service'), 'utf8');
  const setting = (key: string) => {
    const match = new RegExp(`^${key}=(.+)$`, 'm').exec(text);
    if (!match) throw new Error(`the unit has no ${key}=`);
    return match[1].trim();
  };
  return {
    argv: setting('ExecStart').split(/\s+/),
    workdir: setting('WorkingDirectory'),
    stopSignal: setting('KillSignal'),
    timeoutStopSec: Number(setting('TimeoutStopSec')),
  };
}

function graceMs(argv: string[]): number {
  const i = argv.indexOf('--grace-ms');
  return i >= 0 ? Number(argv[i + 1]) : DEFAULTS.shutdownGraceMs;
}

const apps: string[] = [];
afterAll(async () => {
  for (const dir of apps) await rm(dir, { recursive: true, force: true });
});

/** A working directory laid out as the image's or the unit's: the package installed under node_modules, tasks beside it. */
async function appFolder(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'grapevine-app-'));
  apps.push(dir);
  await mkdir(path.join(dir, 'node_modules'));
  await symlink(ROOT, path.join(dir, 'node_modules', 'grapevine-jobs'), 'dir');
  await symlink(FIXTURE_TASKS, path.join(dir, 'tasks'), 'dir');
  return dir;
}

// Words a clean stop must not print; a real crash prints them.
const ERROR_LIKE = /error|exception|unexpected|fail|exit code [1-9]|killed/i;

async function drainsOnStopSignal(db: MigratedTestDatabase, command: StartCommand): Promise<void> {
  const [program, ...args] = command.argv;
  // The Node the image or host provides; here, the one running the tests.
  expect(['node', '/usr/bin/node']).toContain(program);
  const cwd = await appFolder();
  // Only the schema is added: each test file works in its own.
  const supervisor = start([...args, '--schema', db.schema], { DATABASE_URL: db.url, GRAPEVINE_LOG_LEVEL: 'info' }, cwd);
  await supervisor.waitFor(/supervisor started/);

  const gate = `${db.s}.gate`;
  await db.pool.query(`CREATE TABLE ${gate} (open boolean NOT NULL); INSERT INTO ${gate} VALUES (false)`);
  const id = await db.client.addJob('block', { gate });
  await eventually(async () => {
    const { rows } = await db.pool.query(`SELECT state FROM ${db.s}.jobs WHERE id = $1`, [id]);
    return rows[0]?.state === 'running';
  }, 'the blocked job to be running');

  supervisor.child.kill(command.stopSignal as NodeJS.Signals);
  const exit = await supervisor.exited;
  const output = `${exit.stdout}\n${exit.stderr}`;
  expect(exit.signal, output).toBeNull();
  expect(exit.code, output).toBe(0);

  const { rows } = await db.pool.query(`SELECT state, claim_token, lease_until, last_error FROM ${db.s}.jobs WHERE id = $1`, [id]);
  expect(rows[0]).toMatchObject({ state: 'pending', claim_token: null, lease_until: null });
  expect(rows[0].last_error).toMatch(/supervisor shut down/);

  expect(exit.stderr).toBe('');
  // stdout is not a terminal here, so the log is pino JSON: one object per line.
  const lines = exit.stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as { level: number; msg: string });
  expect(
    lines.some((l) => /stopped/.test(l.msg)),
    output,
  ).toBe(true);
  for (const line of lines) {
    // A job cut short by the grace period is worth a warning, not an error.
    expect(line.level, line.msg).toBeLessThan(50);
    expect(line.msg).not.toMatch(ERROR_LIKE);
  }
}

describe('production start', () => {
  const docker = useMigratedSchema('prod_docker');
  const systemd = useMigratedSchema('prod_systemd');

  it("the Dockerfile runs the bin directly in exec form, stops it with SIGTERM within docker stop's wait", async () => {
    const command = await dockerCommand();
    expect(command.argv[1]).toBe('node_modules/grapevine-jobs/dist/supervisor/cli.js');
    expect(command.argv).not.toContain('sh');
    expect(command.argv).not.toContain('npx');
    expect(command.stopSignal).toBe('SIGTERM');
    expect(graceMs(command.argv)).toBeLessThan(10_000); // docker stop's default wait before SIGKILL
  });

  it('the unit runs the bin directly and waits longer than the grace period before SIGKILL', async () => {
    const command = await systemdCommand();
    expect(command.argv[1]).toBe('node_modules/grapevine-jobs/dist/supervisor/cli.js');
    expect(command.argv).not.toContain('npx');
    expect(command.stopSignal).toBe('SIGTERM');
    expect(command.timeoutStopSec * 1000).toBeGreaterThan(graceMs(command.argv));
  });

  // Concurrent: each waits out its grace period with a job that never finishes.
  it.concurrent("the Dockerfile's command drains on SIGTERM, releases its job and exits 0 with nothing error-like", async () => {
    await drainsOnStopSignal(docker, await dockerCommand());
  });

  it.concurrent("the unit's command drains on SIGTERM, releases its job and exits 0 with nothing error-like", async () => {
    await drainsOnStopSignal(systemd, await systemdCommand());
  });
});
