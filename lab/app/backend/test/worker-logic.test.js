'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { outcome } = require('../src/queue');
const { parsePaging } = require('../src/util');
const { providerErrorText } = require('../src/providers');

const row = { id: 7, attempts: 0 };

test('outcome: success marks the row sent', () => {
  const o = outcome(row, { ok: true, provider_message_id: 'SM1' }, 8);
  assert.deepEqual(o, { id: 7, status: 'sent', attempts: 1, provider_message_id: 'SM1', last_error: null, delay_s: 0 });
});

test('outcome: failures stay pending with backoff, then fail at max attempts', () => {
  assert.equal(outcome({ id: 1, attempts: 0 }, { ok: false, error: 'HTTP 503' }, 8).delay_s, 2);
  assert.equal(outcome({ id: 1, attempts: 2 }, { ok: false, error: 'HTTP 503' }, 8).delay_s, 8);
  const ra = outcome({ id: 1, attempts: 0 }, { ok: false, error: 'HTTP 429', retry_after: '17' }, 8);
  assert.equal(ra.status, 'pending');
  assert.equal(ra.delay_s, 17);
  const unauth = outcome({ id: 1, attempts: 3 }, { ok: false, error: 'HTTP 401: Authenticate' }, 8);
  assert.equal(unauth.status, 'pending');
  assert.equal(unauth.attempts, 4);
  assert.equal(unauth.last_error, 'HTTP 401: Authenticate');
  const last = outcome({ id: 1, attempts: 7 }, { ok: false, error: 'HTTP 503' }, 8);
  assert.equal(last.status, 'failed');
  assert.equal(last.attempts, 8);
});

test('provider error text is short and secret-free', () => {
  assert.equal(providerErrorText(401, '{"code":20003,"message":"Authenticate","status":401}'), 'HTTP 401: Authenticate');
  assert.equal(providerErrorText(400, '{"errors":[{"message":"bad to"}]}'), 'HTTP 400: bad to');
  assert.equal(providerErrorText(503, ''), 'HTTP 503');
  assert.ok(providerErrorText(500, 'x'.repeat(1000)).length < 140);
});

test('parsePaging clamps page/per_page', () => {
  assert.deepEqual(parsePaging({}), { page: 1, per_page: 20, offset: 0 });
  assert.deepEqual(parsePaging({ page: '3', per_page: '10' }), { page: 3, per_page: 10, offset: 20 });
  assert.deepEqual(parsePaging({ page: '-1', per_page: '1000' }), { page: 1, per_page: 100, offset: 0 });
  assert.deepEqual(parsePaging({ page: 'abc', per_page: '0' }), { page: 1, per_page: 20, offset: 0 });
});

const { mapLimit } = require('../src/util');

test('mapLimit runs every item, never more than the limit at once', async () => {
  let running = 0;
  let peak = 0;
  const done = [];
  const skipped = await mapLimit([1, 2, 3, 4, 5, 6, 7], 3, async (n) => {
    running++;
    peak = Math.max(peak, running);
    await new Promise((r) => setTimeout(r, 5));
    done.push(n);
    running--;
  });
  assert.deepEqual(skipped, []);
  assert.deepEqual(done.sort(), [1, 2, 3, 4, 5, 6, 7]);
  assert.equal(peak, 3);
});

test('mapLimit on shutdown: in-flight items finish, the rest are returned unstarted, in order', async () => {
  let stopping = false;
  const started = [];
  const finished = [];
  const items = Array.from({ length: 50 }, (_, i) => ({ id: i + 1 }));
  const skipped = await mapLimit(items, 5, async (row) => {
    started.push(row.id);
    if (row.id === 7) stopping = true; // SIGINT arrives while the second round is in flight
    await new Promise((r) => setTimeout(r, 10));
    finished.push(row.id);
  }, { shouldStop: () => stopping });
  assert.deepEqual(finished.sort((a, b) => a - b), started.sort((a, b) => a - b)); // nothing cut mid-send
  assert.ok(started.length <= 7 + 4, `started ${started.length} rows after the stop`);
  assert.deepEqual(skipped.map((r) => r.id), items.map((r) => r.id).filter((id) => !started.includes(id)));
  assert.equal(started.length + skipped.length, 50);
});

test('the worker claims only the channels of providers that are not paused', () => {
  const { claimableChannels, PROVIDER_OF_CHANNEL } = require('../src/queue');
  assert.deepEqual(claimableChannels([]), ['sms', 'email']);
  assert.deepEqual(claimableChannels(undefined), ['sms', 'email']);
  assert.deepEqual(claimableChannels(['twilio']), ['email']);
  assert.deepEqual(claimableChannels(['sendgrid']), ['sms']);
  assert.deepEqual(claimableChannels(['twilio', 'sendgrid']), []);
  assert.deepEqual(claimableChannels(['unknown']), ['sms', 'email']);
  assert.deepEqual(PROVIDER_OF_CHANNEL, { sms: 'twilio', email: 'sendgrid' });
});
