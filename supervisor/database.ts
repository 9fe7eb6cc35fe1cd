import { startEmbeddedDatabase } from '../src/embedded.ts';

export interface ResolvedDatabase {
  connectionString: string;
  /** Stops the embedded server if this process started it. */
  release(): Promise<void>;
  embedded: boolean;
}

export const EMBEDDED_DIR = '.grapevine/db';

/**
 * The database a CLI command talks to: --database-url, then DATABASE_URL,
 * then an embedded PostgreSQL kept under ./.grapevine/db, so a newcomer with
 * only Node can run everything. Commands run in the same directory share it.
 */
export async function resolveDatabase(flag: string | undefined, say: (line: string) => void): Promise<ResolvedDatabase> {
  const given = flag ?? process.env.DATABASE_URL;
  if (given) return { connectionString: given, release: async () => {}, embedded: false };
  const db = await startEmbeddedDatabase({ dir: EMBEDDED_DIR });
  say(
    db.reused
      ? `no DATABASE_URL: using the embedded PostgreSQL already running in ./${EMBEDDED_DIR} (127.0.0.1:${db.port})`
      : `no DATABASE_URL: started embedded PostgreSQL in ./${EMBEDDED_DIR} on 127.0.0.1:${db.port}`,
  );
  return { connectionString: db.connectionString, release: () => db.stop(), embedded: true };
}
