import { defineConfig } from 'vitest/config';
import { BUILT_THREAD_ENTRY } from './test/setup/build.ts';

export default defineConfig({
  test: {
    // Database-heavy files with their own thread pools, which spend most of their time waiting
    // on the database, leases and child processes: three at a time on a 2-core machine.
    maxWorkers: 3,
    projects: [
      {
        // Pure logic: no database, no threads, no build. Its own project so
        // that running only these starts nothing.
        test: { name: 'unit', include: ['test/unit/**/*.test.ts'] },
      },
      {
        test: {
          name: 'integration',
          include: ['test/**/*.test.ts'],
          // The chaos suite has its own command (npm run test:chaos) and budget.
          exclude: ['test/unit/**', 'test/chaos/**', 'node_modules/**'],
          globalSetup: ['test/setup/build.ts', 'test/setup/database.ts'],
          setupFiles: ['test/setup/pooler.ts'],
          // Threads run the build, not the TypeScript sources: see THREAD_ENTRY in supervisor/threads.ts.
          env: { GRAPEVINE_TEST_THREAD_ENTRY: BUILT_THREAD_ENTRY },
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
