// Imported first by every entry point (the CLI, the library): on an older Node
// something deeper fails with an error that does not say why. A module of its
// own, because imports are evaluated in order and this must come before them.
const NEEDED_MAJOR = 22;

if (Number(process.versions.node.split('.')[0]) < NEEDED_MAJOR) {
  process.stderr.write(`grapevine needs Node.js >= ${NEEDED_MAJOR}; this is ${process.version}\n`);
  process.exit(1);
}

export {};
