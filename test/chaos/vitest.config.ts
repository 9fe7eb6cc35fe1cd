import { defineConfig } from 'vitest/config';

// The chaos suite starts its own embedded PostgreSQL (it restarts it mid-run),
// so it has no global database setup. Run with: npm run test:chaos
export default defineConfig({
  test: {
    include: ['test/chaos/**/*.test.ts'],
    maxWorkers: 1,
    testTimeout: 240_000,
    hookTimeout: 60_000,
  },
});
