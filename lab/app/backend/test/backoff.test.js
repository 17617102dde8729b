'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { backoffSeconds, parseRetryAfter } = require('../src/backoff');

test('exponential backoff: min(2^attempts, 60)', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8, 50, 5000].map((a) => backoffSeconds(a)), [2, 4, 8, 16, 32, 60, 60, 60, 60, 60]);
  assert.equal(backoffSeconds(0), 1);
  assert.equal(backoffSeconds(undefined), 1);
  assert.equal(backoffSeconds(-3), 1);
});

test('Retry-After in seconds wins and is capped at 60', () => {
  assert.equal(backoffSeconds(1, '30'), 30);
  assert.equal(backoffSeconds(6, '5'), 5);
  assert.equal(backoffSeconds(1, '3600'), 60);
  assert.equal(backoffSeconds(1, '0'), 1); // never retry in a tight loop
  assert.equal(backoffSeconds(1, '2.2'), 3);
});

test('Retry-After as HTTP date', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:20 GMT', now), 20);
  assert.equal(backoffSeconds(1, 'Thu, 01 Jan 2026 00:00:20 GMT', now), 20);
  assert.equal(backoffSeconds(1, 'Thu, 01 Jan 2026 01:00:00 GMT', now), 60);
  assert.equal(parseRetryAfter('Wed, 31 Dec 2025 00:00:00 GMT', now), 0);
});

test('invalid or absent Retry-After falls back to exponential', () => {
  for (const v of [null, undefined, '', 'soon', '-5']) {
    assert.equal(parseRetryAfter(v), null, String(v));
    assert.equal(backoffSeconds(3, v), 8);
  }
});
