// Run: DATABASE_URL=postgres://... node examples/sqroot/index.mjs
// (or `npm run demo`, which runs this on an embedded PostgreSQL).
import os from 'node:os';
import { runSqrootDemo } from './demo.mjs';

const connectionString = process.env.DATABASE_URL;
if (!connectionString) {
  console.error('set DATABASE_URL, or run `npx grapevine demo` to use an embedded PostgreSQL');
  process.exit(2);
}
await runSqrootDemo({
  connectionString,
  numbers: Array.from({ length: 12 }, (_, i) => i + 1),
  threads: Math.max(2, os.availableParallelism()),
});
