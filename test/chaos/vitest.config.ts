import { defineConfig } from 'vitest/config';
import { BUILT_THREAD_ENTRY } from '../setup/build.ts';

// The chaos suite starts its own embedded PostgreSQL (it restarts it mid-run),
// so it has no global database setup. Run with: npm run test:chaos
export default defineConfig({
  test: {
    include: ['test/chaos/**/*.test.ts'],
    globalSetup: ['test/setup/build.ts'],
    // Threads run the build, not the TypeScript sources: see THREAD_ENTRY in supervisor/threads.ts.
    env: { GRAPEVINE_TEST_THREAD_ENTRY: BUILT_THREAD_ENTRY },
    maxWorkers: 1,
    testTimeout: 240_000,
    hookTimeout: 60_000,
  },
});
