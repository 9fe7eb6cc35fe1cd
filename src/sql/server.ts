import { rowsOf, type Queryable } from '../db.ts';

/** The server's connection limit and how much of it is taken, as a SCALE weighs it. */
export interface ServerConnectionsRow {
  max_connections: number;
  /** superuser_reserved_connections, plus reserved_connections from PostgreSQL 16 on. */
  reserved: number;
  /** Client backends now, every database and role. */
  in_use: number;
}

// Unnamed: read rarely, and the same on every schema.
const SERVER_CONNECTIONS = `SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int
         + coalesce(current_setting('reserved_connections', true), '0')::int AS reserved,
       (SELECT count(*)::int FROM pg_stat_activity WHERE backend_type = 'client backend') AS in_use`;

/** What PostgreSQL allows and holds now (through a pooler: the server behind it). */
export async function serverConnections(db: Queryable): Promise<ServerConnectionsRow> {
  const rows = await rowsOf<ServerConnectionsRow>(db, { text: SERVER_CONNECTIONS });
  return rows[0];
}
