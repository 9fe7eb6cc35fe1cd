import { startEmbeddedDatabase } from '../src/embedded.ts';

export interface ResolvedDatabase {
  connectionString: string;
  /** --listen-url: where LISTEN connections go when connectionString is a pooler. */
  listenUrl?: string;
  /** --no-prepared-statements: false behind a pooler that does not track them. */
  preparedStatements?: false;
  /** --poll: no LISTEN; waits poll. */
  poll?: true;
  /** Stops the embedded server if this process started it. */
  release(): Promise<void>;
  embedded: boolean;
}

export const EMBEDDED_DIR = '.grapevine/db';

/** What a command says when it was given no database (a usage error: exit code 2). */
export const NO_DATABASE = `no database given: set DATABASE_URL or pass --database-url URL, or pass --embedded to run a local PostgreSQL kept in ./${EMBEDDED_DIR}`;

/**
 * Which PostgreSQL a command uses: --embedded, else --database-url, else
 * DATABASE_URL. A deploy that lost its DATABASE_URL must stop, not run jobs
 * into a throwaway local database, so the embedded server is used only when
 * asked for (or, for the demo, when nothing else is given). Returns null
 * when there is no database to use; the caller reports NO_DATABASE.
 */
export function chooseDatabase(flags: { url?: string; embedded?: boolean }, embeddedByDefault = false): { url?: string } | null {
  if (flags.embedded) return {};
  const url = flags.url ?? process.env.DATABASE_URL;
  if (url) return { url };
  return embeddedByDefault ? {} : null;
}

/**
 * Opens the chosen database: the given URL, or an embedded PostgreSQL kept
 * under ./.grapevine/db, shared by the commands run in the same directory.
 */
export async function resolveDatabase(choice: { url?: string }, say: (line: string) => void): Promise<ResolvedDatabase> {
  if (choice.url) return { connectionString: choice.url, release: async () => {}, embedded: false };
  const db = await startEmbeddedDatabase({ dir: EMBEDDED_DIR });
  say(
    db.reused
      ? `using the embedded PostgreSQL already running in ./${EMBEDDED_DIR} (127.0.0.1:${db.port})`
      : `started embedded PostgreSQL in ./${EMBEDDED_DIR} on 127.0.0.1:${db.port}`,
  );
  return { connectionString: db.connectionString, release: () => db.stop(), embedded: true };
}
