// Imported by run.ts: the bench runs grapevine from its build (dist/, what the npm
// package runs), so a build older than the sources would measure old code without a
// word. Its top-level await holds up run.ts's own body, so nothing is measured before
// this check. (A missing dist/ fails earlier, when the import of 'grapevine-jobs' is resolved.)
import { staleBuild } from '../../test/setup/build.ts';

const problem = await staleBuild('the bench runs grapevine from the build: run `npm run build` (`npm run bench` does it for you)');
if (problem) {
  console.error(`bench: ${problem}`);
  process.exit(2);
}
