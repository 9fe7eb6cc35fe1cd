/**
 * What the command modules share: the CLI's parsing and output tools (given
 * by supervisor/cli.ts), and text made safe for a terminal.
 */
import type { ParseArgsConfig } from 'node:util';
import { createControl, type Control } from '../src/control.ts';
import type { ResolvedDatabase } from './database.ts';

export type Values = Record<string, string | boolean | string[] | undefined>;

/** What cli.ts lends these commands, so usage errors look the same everywhere. */
export interface CliTools {
  parse(command: string, argv: string[], options: ParseArgsConfig['options']): { values: Values; positionals: string[] };
  int(values: Values, name: string): number | undefined;
  usage(message: string): Error;
  say(line: string): void;
  /** The database the command's flags and environment name (a usage error if none). */
  database(values: Values): Promise<ResolvedDatabase>;
}

/** The connection options of a client or control client on the database the command's flags name. */
export function connectionOptions(db: ResolvedDatabase, values: Values) {
  return {
    connectionString: db.connectionString,
    listenUrl: db.listenUrl,
    preparedStatements: db.preparedStatements,
    poll: db.poll,
    schema: values.schema as string | undefined,
  };
}

/** Runs fn with a control client on the database the command's flags name, closing both after. */
export async function withControl(values: Values, tools: CliTools, fn: (control: Control) => Promise<number>): Promise<number> {
  const db = await tools.database(values);
  const control = createControl(connectionOptions(db, values));
  try {
    return await fn(control);
  } finally {
    await control.close().catch(() => {});
    await db.release();
  }
}

/**
 * Job text (task names are plain, but errors come from handlers) as the
 * terminal should show it: control characters, which could move the cursor
 * or rewrite earlier lines, and bidirectional overrides, which could reorder
 * what is shown, are printed as escapes.
 */
export function printable(text: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\t') return '\\t';
    if (c === '\r') return '\\r';
    return unicodeEscape(c);
  });
}

/**
 * A value as indented JSON the terminal shows as it is: JSON.stringify
 * escapes C0 control characters (ESC among them) but not C1 controls or
 * bidirectional overrides, so those are escaped too; the text stays valid JSON.
 */
export function printableJson(value: unknown, indent = 2): string {
  return JSON.stringify(value, null, indent).replace(/[\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, unicodeEscape);
}

function unicodeEscape(c: string): string {
  return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
}

export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}
