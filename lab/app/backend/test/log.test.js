'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const log = require('../src/log');

test('fingerprint is the first 12 hex of sha256', () => {
  // sha256("secret") = 2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b
  assert.equal(log.fingerprint('secret'), '2bb80d537b1d');
  assert.equal(log.fingerprint(''), null);
});

test('redact masks registered secrets (raw and URL-encoded) and URL credentials', () => {
  log.clearSecrets();
  log.registerSecret('jwt-super-secret');
  log.registerSecret('p@ss:word');
  assert.equal(log.redact('token jwt-super-secret here'), 'token *** here');
  assert.equal(log.redact('pw=p%40ss%3Aword'), 'pw=***');
  assert.equal(
    log.redact('connect postgresql://akig_app:whatever@127.0.0.11:5432/akig_db failed'),
    'connect postgresql://akig_app:***@127.0.0.11:5432/akig_db failed',
  );
  assert.equal(log.redact('redis://:pw123@127.0.0.31:6379/0'), 'redis://:***@127.0.0.31:6379/0');
  assert.equal(log.redact(42), 42);
  log.clearSecrets();
});

test('sanitize masks secret-looking keys recursively and keeps the rest', () => {
  const out = log.sanitize({
    password: 'x',
    nested: { api_key: 'k', apiKey: 'k2', authorization: 'Basic abc', ok: 'fine', token: null },
    list: [{ JWT_SECRET: 's' }],
    status: 200,
    read_only: true,
  });
  assert.deepEqual(out, {
    password: '***',
    nested: { api_key: '***', apiKey: '***', authorization: '***', ok: 'fine', token: null },
    list: [{ JWT_SECRET: '***' }],
    status: 200,
    read_only: true,
  });
});

test('errorInfo: class, code, first line only, secrets redacted, no stack', () => {
  log.clearSecrets();
  log.registerSecret('hunter2-secret');
  const err = new Error('auth failed with hunter2-secret\nsecond line');
  err.code = '28P01';
  const info = log.errorInfo(err);
  assert.deepEqual(info, { error_class: 'Error', code: '28P01', message: 'auth failed with ***' });
  assert.ok(!JSON.stringify(info).includes('at '), 'no stack');
  class ReplyError extends Error {}
  const re = log.errorInfo(new ReplyError('WRONGTYPE Operation against a key holding the wrong kind of value'));
  assert.equal(re.error_class, 'ReplyError');
  assert.equal(re.code, 'WRONGTYPE');
  log.clearSecrets();
});

test('errorCode maps errors to short codes', () => {
  assert.equal(log.errorCode(Object.assign(new Error('x'), { code: 'ECONNREFUSED' })), 'ECONNREFUSED');
  assert.equal(log.errorCode(new Error('x', { cause: { code: 'ECONNRESET' } })), 'ECONNRESET');
  assert.equal(log.errorCode(new Error('query read timeout')), 'timeout');
  assert.equal(log.errorCode(new Error('NOAUTH Authentication required.')), 'NOAUTH');
});

test('log lines are JSON and secret-free', () => {
  log.clearSecrets();
  log.registerSecret('very-secret-value');
  const chunks = [];
  const orig = process.stdout.write;
  process.stdout.write = (c) => { chunks.push(String(c)); return true; };
  try {
    log.info('boot with very-secret-value', { db: 'postgresql://u:pw@h/db', password: 'p', n: 1 });
  } finally {
    process.stdout.write = orig;
  }
  const line = JSON.parse(chunks.join(''));
  assert.equal(line.level, 'info');
  assert.equal(line.msg, 'boot with ***');
  assert.equal(line.db, 'postgresql://u:***@h/db');
  assert.equal(line.password, '***');
  assert.equal(line.n, 1);
  log.clearSecrets();
});
