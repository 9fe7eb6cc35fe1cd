// An HTTP service that enqueues jobs inside its request's transaction and
// runs the grapevine supervisor in the same process.
//
//   DATABASE_URL=postgres://... PORT=3000 node examples/embed/server.mjs
//   curl -XPOST localhost:3000/orders -d '{"item":"tea"}'
//   curl localhost:3000/jobs/1
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import pino from 'pino';
import { createClient, startSupervisor } from 'grapevine-jobs';

const connectionString = process.env.DATABASE_URL;
if (!connectionString) {
  console.error('set DATABASE_URL to a PostgreSQL connection string');
  process.exit(2);
}
const schema = 'embed_example';
const logger = pino({ level: process.env.LOG_LEVEL ?? 'warn' });

// The service's own pool; grapevine's client shares it.
const pool = new pg.Pool({ connectionString, max: 5 });
// A connection the server ends (a restart, a failover) emits 'error', and an
// 'error' nobody hears ends the process: idle connections emit it on the pool,
// checked-out ones on their client. The statement that needed the connection
// still fails, and the request gets a 500.
pool.on('error', (err) => logger.warn({ err: err.message }, 'idle database connection closed'));
pool.on('connect', (client) => client.on('error', (err) => logger.warn({ err: err.message }, 'database connection lost')));
const jobs = createClient({ pool, connectionString, schema });
await jobs.migrate();
await pool.query(`CREATE TABLE IF NOT EXISTS ${schema}.orders (
  id serial PRIMARY KEY, item text NOT NULL, receipt_sent_at timestamptz)`);

const supervisor = await startSupervisor({
  connectionString,
  schema,
  tasks: path.join(path.dirname(fileURLToPath(import.meta.url)), 'tasks'),
  threads: 2,
  logger,
});

async function createOrder(item) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query(`INSERT INTO ${schema}.orders (item) VALUES ($1) RETURNING id`, [item]);
    // Same transaction: if the order rolls back, so does its job (and no worker hears of it).
    const jobId = await jobs.addJob('send-receipt', { orderId: rows[0].id }, { db: client });
    await client.query('COMMIT');
    return { orderId: rows[0].id, jobId };
  } catch (err) {
    // If the connection is gone, so is the transaction: keep the first error.
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    // pg's pool closes a client whose connection failed instead of reusing it.
    client.release();
  }
}

const server = http.createServer(async (req, res) => {
  const reply = (status, body) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  try {
    if (req.method === 'POST' && req.url === '/orders') {
      let body = '';
      for await (const chunk of req) body += chunk;
      const { item } = JSON.parse(body || '{}');
      if (typeof item !== 'string' || item === '') return reply(400, { error: 'body must be {"item": "<name>"}' });
      return reply(201, await createOrder(item));
    }
    const match = /^\/jobs\/(\d+)$/.exec(req.url ?? '');
    if (req.method === 'GET' && match) {
      const job = await jobs.getJob(match[1]);
      return job ? reply(200, { id: job.id, state: job.state, result: job.result }) : reply(404, { error: 'no such job' });
    }
    if (req.method === 'GET' && req.url === '/status') return reply(200, supervisor.status());
    reply(404, { error: 'not found' });
  } catch (err) {
    reply(500, { error: err.message });
  }
});

server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});

// The service owns its signals: stop taking requests, then let the supervisor drain.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, async () => {
    server.close();
    await supervisor.stop();
    await jobs.close();
    await pool.end();
    process.exit(0);
  });
}
