// Recurring schedules stored in the database and fired by the supervisors:
// exactly one job per schedule and tick, whoever fires it and whoever dies
// meanwhile (the unique (schedule, scheduled_for) index), the missed-tick
// policy after downtime, the three ways of declaring one, and the tick as
// the handler sees it. No test waits for a duration: each waits for rows.
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { createSchedules, type Supervisor, type SupervisorOptions } from '../supervisor/public.ts';
import { Maintenance } from '../supervisor/maintenance/leader.ts';
import { parseSchedule } from '../src/schedule/schedule.ts';
import { latestTick, ticksBetween } from '../src/schedule/ticks.ts';
import { eventually, FIXTURE_TASKS, startTestSupervisor, testLogger, useMigratedSchema } from './helpers/db.ts';
import { capturingLogger } from './helpers/logs.ts';
import { CLI, run, start as startProcess, type Running } from './helpers/process.ts';

const db = useMigratedSchema('schedules');
const { s } = db;
const schedules = createSchedules({ connectionString: db.url, schema: db.schema });
afterAll(() => schedules.close());

const SUPERVISOR_PROCESS = path.resolve(import.meta.dirname, 'fixtures/supervisor-process.ts');
const TIMING = { leaseMs: 1_500, heartbeatIntervalMs: 200, sweepIntervalMs: 200, reaperIntervalMs: 200 };

const started: Supervisor[] = [];
const processes: Running[] = [];
afterEach(async () => {
  for (const sup of started.splice(0)) await sup.stop({ graceMs: 0 });
  for (const proc of processes.splice(0)) {
    if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill('SIGKILL');
    await proc.exited;
  }
  // Each test declares its own schedules; none fires into the next.
  await db.pool.query(`DELETE FROM ${s}.schedules`);
});

async function startSupervisor(options: Partial<SupervisorOptions> = {}): Promise<Supervisor> {
  const sup = await startTestSupervisor(db, { threads: 1, concurrency: 4, shutdownGraceMs: 0, ...TIMING, ...options });
  started.push(sup);
  return sup;
}

function startSupervisorProcess(options: Partial<SupervisorOptions>): Running {
  const proc = startProcess([SUPERVISOR_PROCESS], {
    DATABASE_URL: db.url,
    GRAPEVINE_TEST_SUPERVISOR: JSON.stringify({
      schema: db.schema,
      tasks: FIXTURE_TASKS,
      threads: 1,
      concurrency: 4,
      ...TIMING,
      ...options,
    }),
  });
  processes.push(proc);
  return proc;
}

async function createLedger(name: string): Promise<string> {
  const table = `${s}.${name}`;
  await db.pool.query(
    `CREATE TABLE ${table} (job_id bigint NOT NULL, attempt integer NOT NULL, scheduled_for timestamptz, UNIQUE (job_id, attempt))`,
  );
  return table;
}

async function tickJobs(schedule: string): Promise<{ id: string; scheduled_for: Date; state: string; result: any }[]> {
  const { rows } = await db.pool.query(
    `SELECT id::text AS id, scheduled_for, state, result FROM ${s}.jobs WHERE schedule = $1 ORDER BY scheduled_for, id`,
    [schedule],
  );
  return rows;
}

const cli = (...args: string[]) => run([CLI, ...args, '--schema', db.schema], { DATABASE_URL: db.url });

describe('one job per tick', { timeout: 120_000 }, () => {
  it('two supervisor processes, one SIGKILLed mid-run: every tick between the first and the last has exactly one job, and each ran', async () => {
    const ledger = await createLedger('ledger_failover');
    // backfill: a supervisor starved of CPU may fire a per-second tick more
    // than a second late, and this test is about who fires, not about lateness.
    const declared = {
      name: 'every-second',
      cron: '* * * * * *',
      task: 'tick-ledger',
      payload: { table: ledger },
      missed: { backfill: 30 },
    } as const;
    const doomed = startSupervisorProcess({ schedules: [declared] });
    const survivor = startSupervisorProcess({ schedules: [declared] });
    await doomed.waitFor(/ready \S+/);
    await survivor.waitFor(/ready \S+/);

    await eventually(async () => (await tickJobs('every-second')).length >= 3, 'three ticks fired by the two supervisors');
    doomed.child.kill('SIGKILL');
    expect((await doomed.exited).signal).toBe('SIGKILL');
    const atKill = (await tickJobs('every-second')).length;
    await eventually(async () => (await tickJobs('every-second')).length >= atKill + 3, 'three more ticks fired by the survivor');

    await schedules.pause('every-second');
    // The doomed one's running jobs are reaped and run again by the survivor.
    await eventually(async () => (await tickJobs('every-second')).every((j) => j.state === 'succeeded'), 'every tick job to succeed');
    survivor.child.kill('SIGTERM');
    await survivor.exited;

    const jobs = await tickJobs('every-second');
    const ticks = jobs.map((j) => j.scheduled_for.getTime());
    const expected = ticksBetween(parseSchedule(declared), new Date(ticks[0]), new Date(ticks.at(-1)! + 1), 1_000).map((t) => t.getTime());
    expect(ticks).toEqual(expected);
    expect(ticks.length).toBeGreaterThanOrEqual(6);
    // Each ran, and each run saw its own tick.
    const { rows: runs } = await db.pool.query(`SELECT DISTINCT job_id::text AS id, scheduled_for FROM ${ledger} ORDER BY scheduled_for`);
    expect(runs.map((r) => [r.id, r.scheduled_for.getTime()])).toEqual(jobs.map((j) => [j.id, j.scheduled_for.getTime()]));
  });

  it('the database refuses a second job for a tick, whoever inserts it', async () => {
    const insert = `INSERT INTO ${s}.jobs (task, schedule, scheduled_for) VALUES ('noop', 'by-hand', '2026-01-01T00:00:00Z')`;
    await db.pool.query(insert);
    await expect(db.pool.query(insert)).rejects.toMatchObject({ code: '23505' });
    await db.pool.query(`DELETE FROM ${s}.jobs WHERE schedule = 'by-hand'`);
  });
});

describe('a schedule that cannot fire', { timeout: 60_000 }, () => {
  it("holds up no other: its payload over the schema's limit fails its own firing only", async () => {
    await db.pool.query(`UPDATE ${s}.settings SET max_payload_bytes = 1024`);
    try {
      await schedules.add({ name: 'too-big', cron: '* * * * * *', task: 'noop', payload: { text: 'x'.repeat(2_000) } });
      await schedules.add({ name: 'fine', cron: '* * * * * *', task: 'noop' });
      const log = capturingLogger('warn');
      await startSupervisor({ logger: log.logger });
      await eventually(async () => (await tickJobs('fine')).some((j) => j.state === 'succeeded'), 'the other schedule to fire');
      await eventually(
        () => log.lines().find((l) => l.msg === 'could not fire a schedule; trying again' && l.schedule === 'too-big'),
        'the warning naming it',
      );
      expect(await tickJobs('too-big')).toEqual([]);
    } finally {
      await db.pool.query(`UPDATE ${s}.settings SET max_payload_bytes = DEFAULT`);
    }
  });
});

describe('after downtime', { timeout: 60_000 }, () => {
  it('each schedule runs its missed ticks as its policy says: skip none, once the latest, backfill the N latest', async () => {
    // Hourly at a minute half an hour from now: the latest tick is never on time (late), only missed.
    const minute = (new Date().getUTCMinutes() + 30) % 60;
    const cron = `${minute} * * * *`;
    const policies = { skip: 'skip', once: 'once', backfill: { backfill: 3 } } as const;
    const latest = latestTick(parseSchedule({ name: 'x', cron, task: 'noop' }), new Date())!;
    for (const [name, missed] of Object.entries(policies)) await schedules.add({ name: `down-${name}`, cron, task: 'noop', missed });
    // Last fired five hours before its latest tick, then the fleet was down.
    await db.pool.query(`UPDATE ${s}.schedules SET last_tick = $1`, [new Date(latest.getTime() - 5 * 3_600_000)]);

    await startSupervisor();
    await eventually(async () => {
      const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM ${s}.schedules WHERE last_tick = $1`, [latest]);
      return rows[0].n === 3;
    }, 'every schedule to be brought up to its latest tick');

    const hour = 3_600_000;
    const firedFor = async (name: string) => (await tickJobs(`down-${name}`)).map((j) => j.scheduled_for.getTime());
    expect(await firedFor('skip')).toEqual([]);
    expect(await firedFor('once')).toEqual([latest.getTime()]);
    expect(await firedFor('backfill')).toEqual([latest.getTime() - 2 * hour, latest.getTime() - hour, latest.getTime()]);
  });
});

describe('the handler', { timeout: 60_000 }, () => {
  it('knows the tick its job was added for (helpers.job.scheduledFor)', async () => {
    await startSupervisor({ schedules: [{ name: 'report-ticks', cron: '* * * * * *', task: 'report_helpers' }] });
    const job = await eventually(
      async () => (await tickJobs('report-ticks')).find((j) => j.state === 'succeeded'),
      'a tick job to succeed',
    );
    expect(job.result.job).toMatchObject({ task: 'report_helpers', scheduledFor: job.scheduled_for.toISOString() });
  });
});

describe('declared by CLI', { timeout: 60_000 }, () => {
  it('add, list with the next three run times, pause, resume, remove', async () => {
    const added = await cli(
      'schedule',
      'add',
      'nightly',
      '30 2 * * *',
      'report',
      '{"full":true}',
      '--tz',
      'Europe/Paris',
      '--queue',
      'reports',
      '--missed',
      'backfill:3',
    );
    expect([added.code, added.stderr]).toEqual([0, `grapevine: schedule "nightly" stored in schema "${db.schema}"\n`]);

    const listed = await cli('schedule', 'list', '--json');
    expect(listed.code).toBe(0);
    const [nightly] = JSON.parse(listed.stdout);
    expect(nightly).toMatchObject({
      name: 'nightly',
      cron: '30 2 * * *',
      tz: 'Europe/Paris',
      task: 'report',
      payload: { full: true },
      queue: 'reports',
      missed: { backfill: 3 },
      paused: false,
    });
    expect(nightly.nextRuns).toHaveLength(3);
    // 02:30 in Paris is 00:30 or 01:30 UTC.
    for (const at of nightly.nextRuns) expect(at).toMatch(/T0[01]:30:00\.000Z$/);
    const text = await cli('schedule', 'list');
    expect(text.stdout).toContain(
      `nightly  30 2 * * *  Europe/Paris  report  queue=reports  missed=backfill:3\n  next: ${nightly.nextRuns.join('  ')}`,
    );

    expect((await cli('schedule', 'pause', 'nightly')).code).toBe(0);
    expect((await cli('schedule', 'list')).stdout).toContain('PAUSED\n  next: (paused)');
    expect((await cli('schedule', 'resume', 'nightly')).code).toBe(0);
    expect((await schedules.list())[0]).toMatchObject({ name: 'nightly', paused: false });
    expect((await cli('schedule', 'remove', 'nightly')).code).toBe(0);
    expect(await schedules.list()).toEqual([]);

    const again = await cli('schedule', 'remove', 'nightly');
    expect([again.code, again.stderr]).toEqual([
      1,
      `grapevine: no schedule is named "nightly" in schema "${db.schema}": grapevine schedule list shows them\n`,
    ]);
    const bad = await cli('schedule', 'add', 'bad', '0 0 32 * *', 'report');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/schedule "bad": invalid cron "0 0 32 \* \*": the day-of-month field "32" is invalid/);
  });

  it('a schedule added while a supervisor runs fires without a restart, told by a notification', async () => {
    // No schedule at start, so the supervisor has no tick timer: only the notification can wake it.
    await startSupervisor();
    expect((await cli('schedule', 'add', 'late-comer', '* * * * * *', 'noop')).code).toBe(0);
    await eventually(async () => (await tickJobs('late-comer')).some((j) => j.state === 'succeeded'), 'the new schedule to fire');
  });
});

describe('a crontab file', { timeout: 60_000 }, () => {
  const dir = os.tmpdir();

  it('with a bad expression and an unknown zone stops `grapevine run`, naming each line', async () => {
    const file = path.join(dir, `grapevine-crontab-${process.pid}-bad`);
    writeFileSync(file, '# nightly jobs\n0 0 32 * * report\n30 2 * * * report --name=paris --tz=Europe/Pariss\n');
    const result = await cli('run', '--tasks', FIXTURE_TASKS, '--crontab', file);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`2 bad lines in crontab ${file}:`);
    expect(result.stderr).toMatch(new RegExp(`${file}:2: schedule "report": invalid cron "0 0 32 \\* \\*"`));
    expect(result.stderr).toContain(`${file}:3: schedule "paris": unknown time zone "Europe/Pariss"`);
    expect(await schedules.list()).toEqual([]);
  });

  it('declares its schedules, which the supervisor stores and fires', async () => {
    const file = path.join(dir, `grapevine-crontab-${process.pid}-good`);
    writeFileSync(file, '* * * * * * noop --name=from-crontab {"from": "crontab"}\n');
    const proc = startProcess([CLI, 'run', '--tasks', FIXTURE_TASKS, '--threads', '1', '--crontab', file, '--schema', db.schema], {
      DATABASE_URL: db.url,
    });
    processes.push(proc);
    await eventually(async () => (await tickJobs('from-crontab')).some((j) => j.state === 'succeeded'), 'the crontab schedule to fire');
    expect((await schedules.list()).map((x) => [x.name, x.payload])).toEqual([['from-crontab', { from: 'crontab' }]]);
    proc.child.kill('SIGTERM');
    expect((await proc.exited).code).toBe(0);
  });
});

describe('a schedule whose task no supervisor handles', { timeout: 60_000 }, () => {
  it('is named by the unhandled-task warning before any of its jobs is due', async () => {
    await startSupervisor({ reaperIntervalMs: 3_600_000 });
    await schedules.add({ name: 'typo', cron: '0 0 1 1 *', task: 'reprot' });
    await schedules.add({ name: 'paused-typo', cron: '0 0 1 1 *', task: 'reprot2' });
    await schedules.pause('paused-typo');
    await db.pool.query(`DELETE FROM ${s}.maintenance`);
    const reaper = new Maintenance({
      pool: db.pool,
      schema: db.schema,
      leaseMs: 10_000,
      intervalMs: 1_000,
      retentionMs: 60_000,
      logger: testLogger(),
    });
    const result = await reaper.tick();
    expect(result.unhandled).toEqual([{ task: 'reprot', queue: 'default', jobs: 0, schedules: ['typo'] }]);
  });
});
