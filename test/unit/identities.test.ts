import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { NicIdentities } from '../../src/network/identities.js';

describe('NIC identities on a switch', () => {
  test('a MAC or an address held by one machine is refused to another, and free again after release', () => {
    const ids = new NicIdentities('lan');
    const release = ids.claim('52:54:00:00:00:01', 'a', '10.0.0.1/24');
    assert.throws(
      () => ids.claim('52-54-00-00-00-01', 'b'),
      (error: Error) =>
        error instanceof ConfigError &&
        /MAC 52-54-00-00-00-01 of machine b is already used by machine a/.test(error.message),
    );
    assert.throws(
      () => ids.claim('52:54:00:00:00:02', 'b', '10.0.0.1/16'),
      /switch lan: address 10\.0\.0\.1 of machine b is already used by machine a/,
    );
    assert.equal(ids.holderOf('52:54:00:00:00:01'), 'a');
    release();
    assert.equal(ids.holderOf('52:54:00:00:00:01'), undefined);
    ids.claim('52:54:00:00:00:02', 'b', '10.0.0.1/24');
  });

  test('freeAddress gives the lowest host address nobody holds, with the same prefix', () => {
    const ids = new NicIdentities('lan');
    assert.equal(ids.freeAddress('192.168.1.7/24'), '192.168.1.1/24');
    ids.claim('52:54:00:00:00:01', 'a', '192.168.1.1/24');
    ids.claim('52:54:00:00:00:02', 'b', '192.168.1.2/24');
    assert.equal(ids.freeAddress('192.168.1.1/24'), '192.168.1.3/24');
    assert.equal(ids.freeAddress('10.9.8.77/8'), '10.0.0.1/8');
  });

  test('a full subnet is a ConfigError naming it', () => {
    const ids = new NicIdentities('lan');
    ids.claim('52:54:00:00:00:01', 'a', '10.0.0.1/30');
    ids.claim('52:54:00:00:00:02', 'b', '10.0.0.2/30');
    assert.throws(() => ids.freeAddress('10.0.0.1/30'), /every address of 10\.0\.0\.0\/30 is taken/);
  });
});
