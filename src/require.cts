// The `require` condition of vmkit's exports. vmkit is an ES module: a Node that can require()
// one (22.12+, or 20.17+ with --experimental-require-module) gets the very module `import`
// gives; an older one gets an error that says what to do, not "No exports main defined".
if (process.features.require_module) {
  module.exports = require('./index.js');
} else {
  const error = new Error(
    `vmkit is an ES module, and this Node (${process.version}) does not require() ES modules. Import it ` +
      'from an ES module instead: set "type": "module" in your package.json, or name the file .mts (or ' +
      '.mjs). Node 20.19+ and 22.12+ can require() it unless --no-experimental-require-module is set; ' +
      '20.17 and 20.18 need --experimental-require-module. `vmkit run` loads test scripts as ES ' +
      'modules in any project.',
  );
  Object.assign(error, { code: 'ERR_REQUIRE_ESM' });
  throw error;
}
