/**
 * On a Node older than 22 the CLI, the library and `npm test` stop at once
 * with one line naming both versions. The machine's own Node (often 20,
 * at /usr/bin/node) runs them; the suite itself runs on a newer one.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI, ROOT } from './helpers/process.ts';

function major(node: string): number {
  try {
    return Number(execFileSync(node, ['-p', 'process.versions.node.split(".")[0]'], { encoding: 'utf8' }).trim());
  } catch {
    return 0;
  }
}

function findOldNode(): string | undefined {
  const which = spawnSync('which', ['-a', 'node'], { encoding: 'utf8' }).stdout.split('\n');
  const candidates = ['/usr/bin/node', '/usr/local/bin/node', ...which].filter((p) => p && existsSync(p));
  return candidates.find((node) => {
    const m = major(node);
    return m > 0 && m < 22;
  });
}

const oldNode = findOldNode();
if (!oldNode)
  console.warn('[node-version.test] SKIPPED: no Node.js older than 22 on this machine (looked at /usr/bin/node and `which -a node`)');

describe.skipIf(!oldNode)(`on ${oldNode ?? 'an old Node (none found: skipped)'}`, () => {
  const version = oldNode ? execFileSync(oldNode, ['-p', 'process.version'], { encoding: 'utf8' }).trim() : '';
  const expectRefused = (args: string[]) => {
    const result = spawnSync(oldNode!, args, { cwd: ROOT, encoding: 'utf8' });
    expect(result.stderr).toBe(`grapevine needs Node.js >= 22; this is ${version}\n`);
    expect(result.stdout).toBe('');
    expect(result.status).toBe(1);
  };

  it('the CLI refuses to run', () => expectRefused([CLI, '--help']));

  it('the library refuses to load', () => {
    expectRefused(['--input-type=module', '-e', "await import('grapevine-jobs')"]);
    expectRefused(['--input-type=module', '-e', "await import('grapevine-jobs/testing')"]);
  });

  it('npm test refuses before building or starting vitest', () => {
    const script = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts.test;
    const [guard] = script.split(' && ');
    expect(guard).toBe('node test/setup/node-version.mjs');
    expectRefused([guard.split(' ')[1]]);
  });
});
