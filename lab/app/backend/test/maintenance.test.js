'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const os = require('os');
const path = require('path');
const m = require('../src/maintenance');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'akig-maint-'));
const flag = path.join(dir, 'maintenance.flag');
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('isMaintenance follows the flag file', () => {
  assert.equal(m.isMaintenance(flag), false);
  fs.writeFileSync(flag, '');
  assert.equal(m.isMaintenance(flag), true);
  fs.unlinkSync(flag);
  assert.equal(m.isMaintenance(flag), false);
  assert.equal(m.isMaintenance(''), false);
  assert.equal(m.isMaintenance(undefined), false);
});

test('writes are blocked only while the flag exists', () => {
  assert.equal(m.isWriteBlocked('POST', '/api/payments', flag), false);
  fs.writeFileSync(flag, '');
  try {
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE', 'post']) {
      assert.equal(m.isWriteBlocked(method, '/api/payments', flag), true, method);
    }
    for (const method of ['GET', 'HEAD', 'OPTIONS']) {
      assert.equal(m.isWriteBlocked(method, '/api/payments', flag), false, method);
    }
    assert.equal(m.isWriteBlocked('POST', '/api/login', flag), false);
    assert.equal(m.isWriteBlocked('POST', '/api/login/', flag), false);
    assert.equal(m.isWriteBlocked('POST', '/API/Login', flag), false);
    assert.equal(m.isWriteBlocked('POST', '/api/notifications/test', flag), false);
    assert.equal(m.isWriteBlocked('POST', '/api/notifications/test?x=1', flag), false);
    assert.equal(m.isWriteBlocked('POST', '/api/notifications', flag), true);
    assert.equal(m.isWriteBlocked('POST', '/api/login-other', flag), true);
  } finally {
    fs.unlinkSync(flag);
  }
});

test('middleware answers 503 with the French message', () => {
  fs.writeFileSync(flag, '');
  try {
    const mw = m.middleware(() => flag);
    let status;
    let body;
    const res = {
      status(s) { status = s; return this; },
      set() { return this; },
      json(b) { body = b; return this; },
    };
    let nextCalled = false;
    mw({ method: 'POST', path: '/api/payments' }, res, () => { nextCalled = true; });
    assert.equal(nextCalled, false);
    assert.equal(status, 503);
    assert.deepEqual(body, { error: "Maintenance en cours - pas d'écritures" });
    mw({ method: 'GET', path: '/api/payments' }, res, () => { nextCalled = true; });
    assert.equal(nextCalled, true);
  } finally {
    fs.unlinkSync(flag);
  }
});

test('the banner file sits next to the maintenance flag and is shown while it holds text', () => {
  assert.equal(m.bannerFile(flag), path.join(dir, 'banner.txt'));
  assert.equal(m.bannerFile(''), '');
  const banner = m.bannerFile(flag);
  assert.equal(m.readBanner(banner), null);
  assert.equal(m.readBanner(''), null);
  fs.writeFileSync(banner, '  Envoi des SMS retardé :\n\nnous rejouons les messages.  ');
  try {
    const b = m.readBanner(banner);
    assert.equal(b.message, 'Envoi des SMS retardé : nous rejouons les messages.');
    assert.ok(!Number.isNaN(Date.parse(b.since)));
    fs.writeFileSync(banner, 'x'.repeat(2000));
    assert.equal(m.readBanner(banner).message.length, m.BANNER_MAX);
    fs.writeFileSync(banner, '   \n');
    assert.equal(m.readBanner(banner), null, 'an empty banner is no banner');
  } finally {
    fs.unlinkSync(banner);
  }
  // the banner never blocks a write
  assert.equal(m.isWriteBlocked('POST', '/api/payments', flag), false);
});
