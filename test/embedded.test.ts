import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { startEmbeddedDatabase } from '../src/embedded.ts';
import type { EmbeddedDatabase } from '../src/embedded.ts';
import { FIXTURE_TASKS } from './helpers/db.ts';
import { CLI, start as startProcess } from './helpers/process.ts';

const root = fileURLToPath(new URL('../.grapevine/', import.meta.url));
const dir = path.join(root, `test-embedded-${randomBytes(4).toString('hex')}`);
const started: EmbeddedDatabase[] = [];

async function start(database?: string): Promise<EmbeddedDatabase> {
  const db = await startEmbeddedDatabase({ dir, database });
  started.push(db);
  return db;
}

async function query<T extends pg.QueryResultRow>(connectionString: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

describe('startEmbeddedDatabase', { timeout: 60_000 }, () => {
  afterAll(async () => {
    for (const db of started) await db.stop();
    await rm(dir, { recursive: true, force: true });
  });

  let owner: EmbeddedDatabase;

  it('initialises a fresh directory, starts a server and creates the database', async () => {
    owner = await start();
    expect(owner.reused).toBe(false);
    expect(owner.host).toBe('127.0.0.1');
    expect(owner.port).not.toBe(5432);
    expect(owner.database).toBe('grapevine');
    expect(owner.dataDir.startsWith(dir)).toBe(true);
    expect(owner.connectionString).toMatch(/^postgres:\/\/postgres:[^@]+@127\.0\.0\.1:\d+\/grapevine$/);
    const rows = await query<{ one: number; db: string }>(owner.connectionString, 'select 1 as one, current_database() as db');
    expect(rows).toEqual([{ one: 1, db: 'grapevine' }]);
  });

  it('attaches to the running server on a second start in the same dir', async () => {
    const second = await start();
    expect(second.reused).toBe(true);
    expect(second.port).toBe(owner.port);
    expect(second.connectionString).toBe(owner.connectionString);
    await second.stop(); // no-op: it did not start the server
    expect(await query(owner.connectionString, 'select 1 as one')).toEqual([{ one: 1 }]);
  });

  it('creates another requested database when attaching', async () => {
    const other = await start('grapevine_other');
    expect(other.reused).toBe(true);
    expect(await query(other.connectionString, 'select current_database() as db')).toEqual([{ db: 'grapevine_other' }]);
  });

  it('stop() of the owner shuts the server down, and is idempotent', async () => {
    await query(owner.connectionString, 'create table kept (id int primary key); insert into kept values (42)');
    await owner.stop();
    await owner.stop();
    await expect(query(owner.connectionString, 'select 1')).rejects.toThrow(/ECONNREFUSED/);
  });

  it('restarts on the same dir with the data kept', async () => {
    const again = await start();
    expect(again.reused).toBe(false);
    expect(await query(again.connectionString, 'select id from kept')).toEqual([{ id: 42 }]);
    await again.stop();
  });

  it('ignores a stale server.json whose owner process is dead', async () => {
    const deadPid = spawnSync(process.execPath, ['-e', '']).pid;
    await writeFile(path.join(dir, 'server.json'), JSON.stringify({ pid: deadPid, postmasterPid: deadPid, port: 1 }));
    const fresh = await start();
    expect(fresh.reused).toBe(false);
    expect(await query(fresh.connectionString, 'select count(*)::int as n from kept')).toEqual([{ n: 1 }]);
    await fresh.stop();
  });
});

describe('grapevine --embedded', { timeout: 120_000 }, () => {
  const cwd = path.join(root, `test-cli-embedded-${randomBytes(4).toString('hex')}`);
  afterAll(() => rm(cwd, { recursive: true, force: true }));
  // No database in the environment: --embedded alone must be enough.
  const env = { DATABASE_URL: undefined, GRAPEVINE_TEST_DATABASE_URL: undefined, GRAPEVINE_LOG_LEVEL: 'warn' };
  const cli = (...args: string[]) => startProcess([CLI, ...args, '--embedded'], env, cwd).exited;

  it('adds and runs a job on a PostgreSQL it starts in ./.grapevine/db', async () => {
    await mkdir(cwd, { recursive: true });
    const added = await cli('add', 'square', '{"n": 9}');
    expect(added.code, added.stderr).toBe(0);
    expect(added.stderr).toMatch(/started embedded PostgreSQL in \.\/\.grapevine\/db on 127\.0\.0\.1:\d+/);
    expect(existsSync(path.join(cwd, '.grapevine/db/pgdata/PG_VERSION'))).toBe(true);
    const id = added.stdout.trim();

    const ran = await cli('run', '--tasks', FIXTURE_TASKS, '--threads', '1', '--idle-timeout', '0.5');
    expect(ran.code, ran.stderr).toBe(0);
    const shown = await cli('job', id);
    expect(JSON.parse(shown.stdout)).toMatchObject({ id, state: 'succeeded', result: { n: 9, root: 3 } });
  });
});
