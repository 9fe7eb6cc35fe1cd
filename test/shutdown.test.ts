import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { Supervisor, SupervisorOptions } from '../supervisor/public.ts';
import { eventually, FIXTURE_TASKS, startTestSupervisor, useMigratedSchema } from './helpers/db.ts';
import { ROOT, start as startProcess, type Running } from './helpers/process.ts';

const db = useMigratedSchema('shutdown');
const { client, s } = db;

// The CLI from source, so the test exercises the code in this tree.
const CLI_SOURCE = path.join(ROOT, 'supervisor/cli.ts');

function start(options: Partial<SupervisorOptions> = {}): Promise<Supervisor> {
  return startTestSupervisor(db, {
    threads: 1,
    concurrency: 2,
    // Long enough that nothing in this file comes back through the reaper.
    leaseMs: 60_000,
    heartbeatIntervalMs: 200,
    reaperIntervalMs: 200,
    sweepIntervalMs: 200,
    ...options,
  });
}

const gates: string[] = [];
/** A table the `block` fixture polls: its jobs run until open() is called. */
async function createGate(): Promise<{ table: string; open(): Promise<void> }> {
  const table = `${s}."gate_${gates.length + 1}"`;
  gates.push(table);
  await db.pool.query(`CREATE TABLE ${table} (open boolean NOT NULL)`);
  await db.pool.query(`INSERT INTO ${table} VALUES (false)`);
  return { table, open: async () => void (await db.pool.query(`UPDATE ${table} SET open = true`)) };
}
// Jobs a test left pending must not hold the next test's supervisor for its whole grace.
afterEach(async () => {
  for (const table of gates) await db.pool.query(`UPDATE ${table} SET open = true`);
});

async function jobRows(ids: string[]) {
  const { rows } = await db.pool.query(`SELECT * FROM ${s}.jobs WHERE id = ANY($1::bigint[]) ORDER BY id`, [ids]);
  return rows;
}

function allRunning(ids: string[], owner: string) {
  return eventually(
    async () => {
      const rows = await jobRows(ids);
      return rows.length === ids.length && rows.every((r) => r.state === 'running' && r.locked_by === owner) ? rows : null;
    },
    `jobs ${ids.join(', ')} to be running on ${owner}`,
  );
}

async function supervisorRow(where: string, value: unknown) {
  const { rows } = await db.pool.query(`SELECT * FROM ${s}.supervisors WHERE ${where} = $1`, [value]);
  return rows[0];
}

/** A job released at shutdown: back to pending, and the attempt it lost does not count against it. */
function expectReleasedByShutdown(row: Record<string, any>, maxAttempts: number): void {
  expect(row).toMatchObject({ state: 'pending', claim_token: null, lease_until: null, result: null });
  expect(row.last_error).toMatch(/supervisor shut down/);
  expect(row.max_attempts - row.attempts).toBe(maxAttempts);
}

describe('stop()', () => {
  it('claims nothing new once stopping, lets running jobs that finish within the grace succeed, and marks the supervisor EXITED', async () => {
    const gate = await createGate();
    const supervisor = await start({ concurrency: 1 });
    const running = await client.addJob('block', { gate: gate.table });
    await allRunning([running], supervisor.id);
    // The only slot is taken, so these wait in the table.
    const waiting = await client.addJobs([{ task: 'noop' }, { task: 'noop' }]);

    const stopping = supervisor.stop({ graceMs: 60_000 });
    expect(supervisor.status().state).toBe('STOPPING');
    // The slot frees up while stopping: a running supervisor would now take the waiting jobs.
    await gate.open();
    await stopping;

    expect(await client.waitForJob(running)).toMatchObject({ state: 'succeeded', attempts: 1, result: { released: true } });
    for (const row of await jobRows(waiting)) expect(row).toMatchObject({ state: 'pending', attempts: 0, locked_by: null });
    expect(supervisor.status().state).toBe('EXITED');
    expect(await supervisorRow('id', supervisor.id)).toMatchObject({ status: 'EXITED' });
    expect((await supervisorRow('id', supervisor.id)).stopped_at).not.toBeNull();
  });

  it('releases jobs still running when the grace ends to pending at once, without counting their attempt', async () => {
    const gate = await createGate();
    const supervisor = await start();
    const ids = await client.addJobs([
      { task: 'block', payload: { gate: gate.table }, maxAttempts: 1 },
      { task: 'block', payload: { gate: gate.table }, maxAttempts: 1 },
    ]);
    await allRunning(ids, supervisor.id);

    await supervisor.stop({ graceMs: 200 });
    // The lease is a minute: pending right now means released by the stop, not reaped.
    for (const row of await jobRows(ids)) expectReleasedByShutdown(row, 1);
    expect(await supervisorRow('id', supervisor.id)).toMatchObject({ status: 'EXITED' });

    // maxAttempts is 1, yet the jobs run again: the interrupted attempt did not use it up.
    const next = await start();
    try {
      await gate.open();
      const done = await Promise.all(ids.map((id) => client.waitForJob(id, { timeoutMs: 30_000 })));
      expect(done.map((j) => [j.state, j.lockedBy])).toEqual(ids.map(() => ['succeeded', next.id]));
    } finally {
      await next.stop({ graceMs: 0 });
    }
  });

  it('stops at once when stop({ graceMs: 0 }) is called during a long grace', async () => {
    const gate = await createGate();
    const supervisor = await start();
    const id = await client.addJob('block', { gate: gate.table }, { maxAttempts: 3 });
    await allRunning([id], supervisor.id);

    // Longer than the test timeout: only the second call can end this stop.
    const graceful = supervisor.stop({ graceMs: 600_000 });
    expect(supervisor.status().state).toBe('STOPPING');
    const forced = supervisor.stop({ graceMs: 0 });
    await Promise.all([graceful, forced]);

    const [row] = await jobRows([id]);
    expectReleasedByShutdown(row, 3);
    expect(await supervisorRow('id', supervisor.id)).toMatchObject({ status: 'EXITED' });
  });

  it('releases at once a job a thread had claimed but not yet reported when the stop came', async () => {
    const supervisor = await start();
    // What a claim leaves when its thread is ended between the commit and
    // the 'claimed' report: a running row that names the supervisor, and a
    // job the supervisor does not know it runs. (A task no thread has, so
    // nothing here claims it for real.)
    const id = await client.addJob('nobody-runs-this', {}, { maxAttempts: 3 });
    await db.pool.query(
      `UPDATE ${s}.jobs SET state = 'running', attempts = attempts + 1, locked_by = $2, locked_thread = 1,
              claim_token = nextval('${s}.claim_tokens'), lease_until = now() + interval '1 minute', started_at = now()
        WHERE id = $1`,
      [id, supervisor.id],
    );
    await supervisor.stop({ graceMs: 0 });
    // The lease is a minute: pending right now means released by the stop.
    expectReleasedByShutdown((await jobRows([id]))[0], 3);
  });
});

describe('SIGTERM to a `grapevine run` process', () => {
  const children: Running[] = [];
  afterAll(() => {
    for (const c of children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
  });

  async function runCli(graceMs: number): Promise<{ cli: Running; supervisorId: string }> {
    const cli = startProcess(
      [
        CLI_SOURCE,
        'run',
        '--tasks',
        FIXTURE_TASKS,
        '--threads',
        '1',
        // One slot, which the blocked job holds: no claim is in flight when the SIGTERM
        // lands, so a job enqueued after it can only be claimed by a supervisor that ignored the stop.
        '--concurrency',
        '1',
        '--grace-ms',
        String(graceMs),
        '--schema',
        db.schema,
        '--log-level',
        'info',
      ],
      { DATABASE_URL: db.url },
    );
    children.push(cli);
    await cli.waitFor(/supervisor started/);
    const row = await eventually(() => supervisorRow('pid', cli.child.pid), 'the CLI supervisor to register');
    return { cli, supervisorId: row.id };
  }

  it('lets the running job finish within the grace, claims nothing new, and exits 0', async () => {
    const gate = await createGate();
    const { cli, supervisorId } = await runCli(60_000);
    const running = await client.addJob('block', { gate: gate.table });
    await allRunning([running], supervisorId);

    cli.child.kill('SIGTERM');
    await cli.waitFor(/stopping: no new jobs/);
    const late = await client.addJob('noop');
    await gate.open();

    const exit = await cli.exited;
    expect(exit.code, exit.stderr).toBe(0);
    expect(await client.getJob(running)).toMatchObject({ state: 'succeeded', attempts: 1, lockedBy: supervisorId });
    expect(await client.getJob(late)).toMatchObject({ state: 'pending', attempts: 0, lockedBy: null });
    expect(await supervisorRow('id', supervisorId)).toMatchObject({ status: 'EXITED' });
  });

  it('stops at once on a second SIGTERM: the running job is released and the process exits 0', async () => {
    const gate = await createGate();
    const { cli, supervisorId } = await runCli(600_000);
    const id = await client.addJob('block', { gate: gate.table }, { maxAttempts: 2 });
    await allRunning([id], supervisorId);

    cli.child.kill('SIGTERM');
    await cli.waitFor(/stopping: no new jobs/);
    cli.child.kill('SIGTERM');

    const exit = await cli.exited;
    expect(exit.code, exit.stderr).toBe(0);
    const [row] = await jobRows([id]);
    expectReleasedByShutdown(row, 2);
    expect(await supervisorRow('id', supervisorId)).toMatchObject({ status: 'EXITED' });
  });
});
