import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DEFAULTS } from '../src/config.ts';

/**
 * docs/configuration.md documents every option; its tables and DEFAULTS must
 * not drift apart. The legend at the top of that page describes the marks this
 * test understands.
 */
const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const PAGE = path.join(ROOT, 'docs', 'configuration.md');

type Default =
  | { kind: 'defaults'; value: unknown } // `8`: the value in DEFAULTS
  | { kind: 'computed' | 'none' | 'required' };

interface Row {
  line: number;
  /** The DEFAULTS key the row stands for: `DEFAULTS.x` in the name cell, else the option name. */
  key: string;
  default: Default;
}

function codeSpans(cell: string): string[] {
  return [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1]);
}

/** `8`, `'grapevine'`, `false`, `3_600_000` as the values they name. */
function literal(text: string): unknown {
  const normalised = /^'.*'$/.test(text) ? JSON.stringify(text.slice(1, -1)) : text.replace(/(\d)_(?=\d)/g, '$1');
  return JSON.parse(normalised);
}

function parseDefault(cell: string, line: number): Default {
  const marker = /^\*(computed|none|required)\*/.exec(cell);
  if (marker) return { kind: marker[1] as 'computed' | 'none' | 'required' };
  const value = /^`([^`]+)`/.exec(cell);
  if (!value) throw new Error(`docs/configuration.md:${line}: unreadable default ${JSON.stringify(cell)} (see the legend on that page)`);
  let parsed: unknown;
  try {
    parsed = literal(value[1]);
  } catch {
    throw new Error(`docs/configuration.md:${line}: default ${value[0]} is not a number, 'string', true, false or null`);
  }
  if (cell.includes('†'))
    throw new Error(`docs/configuration.md:${line}: every fixed default lives in DEFAULTS now; put it there and drop the †`);
  return { kind: 'defaults', value: parsed };
}

/** The rows of every table on the page whose first column is "option". */
function optionRows(markdown: string): Row[] {
  const rows: Row[] = [];
  let inOptionTable = false;
  markdown.split('\n').forEach((text, index) => {
    const line = index + 1;
    if (!text.startsWith('|')) {
      inOptionTable = false;
      return;
    }
    const cells = text
      .split('|')
      .slice(1, -1)
      .map((c) => c.trim());
    if (cells[0] === 'option') {
      expect(cells.slice(0, 2), `docs/configuration.md:${line}: an option table starts with | option | default |`).toEqual([
        'option',
        'default',
      ]);
      inOptionTable = true;
      return;
    }
    if (!inOptionTable || /^-+$/.test(cells[0])) return;
    const spans = codeSpans(cells[0]);
    const defaultsKey = spans.find((s) => s.startsWith('DEFAULTS.'));
    const key = defaultsKey ? defaultsKey.slice('DEFAULTS.'.length) : spans[0];
    if (!key) throw new Error(`docs/configuration.md:${line}: the option cell names no option in backticks`);
    rows.push({ line, key, default: parseDefault(cells[1], line) });
  });
  return rows;
}

describe('docs/configuration.md', () => {
  const rows = optionRows(readFileSync(PAGE, 'utf8'));
  const defaults: Record<string, unknown> = DEFAULTS;

  it('lists every key of DEFAULTS with its value, unmarked', () => {
    for (const [key, value] of Object.entries(defaults)) {
      const mine = rows.filter((r) => r.key === key);
      expect(mine.length, `DEFAULTS.${key} is missing from the tables in docs/configuration.md`).toBeGreaterThan(0);
      for (const row of mine) {
        const where = `docs/configuration.md:${row.line} (${key})`;
        expect(row.default.kind, `${where}: DEFAULTS has ${key}; write its default as \`${JSON.stringify(value)}\` without a mark`).toBe(
          'defaults',
        );
        expect((row.default as { value: unknown }).value, `${where}: the default differs from DEFAULTS.${key}`).toEqual(value);
      }
    }
  });

  it('gives a plain value only to options DEFAULTS holds', () => {
    for (const row of rows) {
      if (row.default.kind === 'defaults') {
        expect(
          Object.hasOwn(defaults, row.key),
          `docs/configuration.md:${row.line}: ${row.key} is not in DEFAULTS; put its default there (or mark it *computed*)`,
        ).toBe(true);
      } else {
        expect(Object.hasOwn(defaults, row.key), `docs/configuration.md:${row.line}: ${row.key} is in DEFAULTS now; drop the mark`).toBe(
          false,
        );
      }
    }
  });

  it('says the same default wherever an option appears twice', () => {
    const seen = new Map<string, Row>();
    for (const row of rows) {
      const first = seen.get(row.key);
      if (first)
        expect(row.default, `docs/configuration.md:${row.line}: ${row.key} differs from line ${first.line}`).toEqual(first.default);
      else seen.set(row.key, row);
    }
  });
});

/** The codes the code raises: declared in src/errors.ts and quoted in some other source file. */
function raisedCodes(): string[] {
  const declared = [...readFileSync(path.join(ROOT, 'src', 'errors.ts'), 'utf8').matchAll(/\| '(GRAPEVINE_[A-Z_]+)'/g)].map((m) => m[1]);
  const sources = ['src', 'supervisor', 'threads']
    .flatMap((dir) => readdirSync(path.join(ROOT, dir), { recursive: true, encoding: 'utf8' }).map((file) => path.join(ROOT, dir, file)))
    .filter((file) => file.endsWith('.ts') && !file.endsWith(path.join('src', 'errors.ts')))
    .map((file) => readFileSync(file, 'utf8'))
    .join('\n');
  return declared.filter((code) => sources.includes(`'${code}'`));
}

describe('docs/errors.md', () => {
  const page = readFileSync(path.join(ROOT, 'docs', 'errors.md'), 'utf8');
  const listed = [...page.matchAll(/^\| `(GRAPEVINE_[A-Z_]+)` \|/gm)].map((m) => m[1]);

  it('lists every error code the code raises', () => {
    const codes = raisedCodes();
    expect(codes.length).toBeGreaterThan(10);
    for (const code of codes) expect(listed, `${code} is raised but missing from docs/errors.md`).toContain(code);
  });

  it('lists only codes src/errors.ts declares', () => {
    const declared = readFileSync(path.join(ROOT, 'src', 'errors.ts'), 'utf8');
    for (const code of listed)
      expect(declared, `docs/errors.md lists ${code}, which src/errors.ts does not declare`).toContain(`'${code}'`);
  });
});
