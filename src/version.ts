import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// Source runs from src/, the built package from dist/src/: look upwards for
// our own package.json rather than hard-coding the depth.
function findPackage(): { root: string; version: string } {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const file = path.join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'grapevine-jobs') return { root: dir, version: pkg.version ?? '0.0.0' };
    }
    dir = path.dirname(dir);
  }
  return { root: process.cwd(), version: '0.0.0' };
}

const found = findPackage();
export const VERSION = found.version;
/** The package's root directory (where package.json and examples/ are). */
export const PACKAGE_ROOT = found.root;
