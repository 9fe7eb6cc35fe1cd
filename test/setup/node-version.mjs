// `npm test` runs this before anything else: on Node < 22 vitest itself
// crashes while printing its summary, so the reason would never be shown.
// Plain JavaScript, because Node 20 cannot load the TypeScript guard in src/.
const NEEDED_MAJOR = 22;

if (Number(process.versions.node.split('.')[0]) < NEEDED_MAJOR) {
  process.stderr.write(`grapevine needs Node.js >= ${NEEDED_MAJOR}; this is ${process.version}\n`);
  process.exit(1);
}
