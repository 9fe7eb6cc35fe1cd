import { existsSync, readFileSync } from 'node:fs';

// Source runs from src/, the built package from dist/src/: look upwards for
// our own package.json rather than hard-coding the depth.
function readVersion(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    const url = new URL(rel, import.meta.url);
    if (!existsSync(url)) continue;
    const pkg = JSON.parse(readFileSync(url, 'utf8')) as { name?: string; version?: string };
    if (pkg.name === 'grapevine' && pkg.version) return pkg.version;
  }
  return '0.0.0';
}

export const VERSION = readVersion();
