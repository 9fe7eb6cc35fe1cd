import { inject } from 'vitest';

/**
 * The pooled pass (GRAPEVINE_TEST_POOLER=pgbouncer): everything the test
 * file and the processes it starts create reads these, as a deployment
 * behind PgBouncer would set them: LISTEN straight to the server, and no
 * named prepared statements, which PgBouncer 1.18 cannot carry in
 * transaction mode. The pass is for the files .ci/run lists: files that
 * route a connection through a proxy of their own (listener, stalled
 * connection) or count connections by role test a direct connection.
 */
if (inject('pooler')) {
  process.env.GRAPEVINE_LISTEN_URL = inject('directDatabaseUrl');
  process.env.GRAPEVINE_PREPARED_STATEMENTS = 'false';
}
