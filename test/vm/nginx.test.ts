// examples/nginx.ts, the NixOS nginx test against a Debian guest built from a recipe.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runCli } from '../helpers.js';

describe('the nginx example', () => {
  it('builds the web image from its recipe (or reuses it), and passes', async () => {
    const run = await runCli(['run', 'examples/nginx.ts'], {}, 480_000);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /client got: hello from nginx/);
    assert.match(run.stderr, /passed in/);
  });
});
