import { defineConfig } from 'vitest/config';
import { BUILT_THREAD_ENTRY } from './test/setup/build.ts';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/setup/build.ts', 'test/setup/database.ts'],
    // Threads run the build, not the TypeScript sources: see THREAD_ENTRY in supervisor/threads.ts.
    env: { GRAPEVINE_TEST_THREAD_ENTRY: BUILT_THREAD_ENTRY },
    // Database-heavy files with their own thread pools: two at a time on a 2-core machine.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // The chaos suite has its own command (npm run test:chaos) and budget.
    exclude: ['test/chaos/**', 'node_modules/**'],
  },
});
