import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/setup/database.ts'],
    // Database-heavy files with their own thread pools: two at a time on a 2-core machine.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // The chaos suite has its own command (npm run test:chaos) and budget.
    exclude: ['test/chaos/**', 'node_modules/**'],
  },
});
