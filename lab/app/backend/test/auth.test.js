'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const jwt = require('jsonwebtoken');
const { tokenFailureClass, AUTH_FAILURE_CLASSES } = require('../src/app');

function verifyError(token, secret) {
  try {
    jwt.verify(token, secret, { algorithms: ['HS256'] });
  } catch (err) {
    return err;
  }
  return null;
}

test('a token signed with another secret is invalid_signature', () => {
  const token = jwt.sign({ sub: '1', sid: 's' }, 'secret-one', { algorithm: 'HS256' });
  assert.equal(tokenFailureClass(verifyError(token, 'secret-two')), 'invalid_signature');
});

test('an expired token is expired, garbage and a missing token are malformed', () => {
  const expired = jwt.sign({ sub: '1', sid: 's', exp: Math.floor(Date.now() / 1000) - 10 }, 'k', { algorithm: 'HS256' });
  assert.equal(tokenFailureClass(verifyError(expired, 'k')), 'expired');
  assert.equal(tokenFailureClass(verifyError('not.a.jwt', 'k')), 'malformed');
  assert.equal(tokenFailureClass(new Error('no bearer token')), 'malformed');
});

test('the classes the runbook counts', () => {
  assert.deepEqual(AUTH_FAILURE_CLASSES, [
    'invalid_signature', 'expired', 'malformed', 'unknown_user', 'bad_password', 'session_missing', 'session_corrupt',
  ]);
});
