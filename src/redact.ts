/**
 * Connection strings carry passwords. Everything that may reach a log, an
 * error message or a status reply goes through here first.
 */
export function describeConnection(connectionString: string): string {
  try {
    const url = new URL(connectionString);
    const host = url.hostname || url.searchParams.get('host') || 'localhost';
    const port = url.port || '5432';
    const database = url.pathname.replace(/^\//, '') || '(default database)';
    const user = url.username ? `${decodeURIComponent(url.username)}@` : '';
    return `${user}${host}:${port}/${database}`;
  } catch {
    // Not a URL (key=value form or garbage): say nothing that could be the password.
    return 'the configured database';
  }
}

/** Removes a known password from free text, e.g. an error message that echoed the DSN. */
export function redactSecret(text: string, connectionString: string | undefined): string {
  if (!connectionString) return text;
  let password = '';
  try {
    password = decodeURIComponent(new URL(connectionString).password);
  } catch {
    const match = /password=([^\s]+)/.exec(connectionString);
    password = match ? match[1] : '';
  }
  let out = text.split(connectionString).join(describeConnection(connectionString));
  if (password) out = out.split(password).join('***');
  return out;
}
