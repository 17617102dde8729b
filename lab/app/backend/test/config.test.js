'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');
const { parseEnvFile, loadConfig, ConfigError, describeUrl, urlPassword } = require('../src/config');

const FULL = `
# AKIG test configuration
HOST=127.0.0.21
PORT=4000
DATABASE_URL=postgresql://akig_app:db%40pass@127.0.0.11:5432/akig_db
REDIS_URL=redis://:redispass@127.0.0.31:6379/0
JWT_SECRET="jwt secret # not a comment"
JWT_TTL_S=3600
TWILIO_ACCOUNT_SID=AC123
TWILIO_AUTH_TOKEN='tw-token'
TWILIO_FROM=+33100000000
TWILIO_BASE_URL=http://127.0.0.41/twilio/
SENDGRID_API_KEY=SG.key
SENDGRID_FROM=noreply@akig.example
SENDGRID_BASE_URL=http://127.0.0.41/sendgrid
MAINTENANCE_FILE=/tmp/akig-maintenance.flag
WORKER_INTERVAL_MS=500
`;

const tmpDirs = [];
test.after(() => tmpDirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function tmpFile(text) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'akig-cfg-'));
  tmpDirs.push(dir);
  const f = path.join(dir, 'akig.env');
  fs.writeFileSync(f, text);
  return f;
}

test('parseEnvFile: comments, blank lines, export, inline comments', () => {
  const v = parseEnvFile('# c\n\nA=1\nexport B=two\nC=three # trailing\nD=x#y\n  E = spaced  \n');
  assert.deepEqual(v, { A: '1', B: 'two', C: 'three', D: 'x#y', E: 'spaced' });
});

test('parseEnvFile: double and single quotes', () => {
  const v = parseEnvFile(`A="a # b"\nB='c # d'\nC="line1\\nline2 \\"q\\""\nD='no \\n escape'\nE=""\nF="x" # comment`);
  assert.equal(v.A, 'a # b');
  assert.equal(v.B, 'c # d');
  assert.equal(v.C, 'line1\nline2 "q"');
  assert.equal(v.D, 'no \\n escape');
  assert.equal(v.E, '');
  assert.equal(v.F, 'x');
});

test('parseEnvFile: values containing = and URL characters', () => {
  const v = parseEnvFile('URL=postgresql://u:p=w@h:5432/db?sslmode=disable\r\nK=a=b\r\n');
  assert.equal(v.URL, 'postgresql://u:p=w@h:5432/db?sslmode=disable');
  assert.equal(v.K, 'a=b');
});

test('parseEnvFile: malformed line and unterminated quote are errors', () => {
  assert.throws(() => parseEnvFile('JUST_A_WORD'), ConfigError);
  assert.throws(() => parseEnvFile('A="open'), (e) => e instanceof ConfigError && e.key === 'A');
  assert.throws(() => parseEnvFile("B='open"), (e) => e instanceof ConfigError && e.key === 'B');
});

test('loadConfig: reads the file, file values win over env, defaults apply', () => {
  const f = tmpFile(FULL);
  const cfg = loadConfig({ role: 'server', env: { AKIG_ENV_FILE: f, PORT: '9999', EXTRA: 'kept' } });
  assert.equal(cfg.PORT, 4000); // file wins, converted to a number
  assert.equal(cfg.EXTRA, 'kept'); // env supplies keys the file lacks
  assert.equal(cfg.JWT_SECRET, 'jwt secret # not a comment');
  assert.equal(cfg.TWILIO_AUTH_TOKEN, 'tw-token');
  assert.equal(cfg.TWILIO_BASE_URL, 'http://127.0.0.41/twilio'); // trailing slash stripped
  assert.equal(cfg.WORKER_MAX_ATTEMPTS, 8); // default
  assert.equal(cfg.DB_CONNECT_TIMEOUT_MS, 2000);
  assert.equal(cfg.envFile, f);
});

test('loadConfig: missing required key names the key', () => {
  const f = tmpFile(FULL.replace(/^JWT_SECRET=.*$/m, ''));
  assert.throws(
    () => loadConfig({ role: 'server', env: { AKIG_ENV_FILE: f } }),
    (e) => e instanceof ConfigError && e.key === 'JWT_SECRET' && /JWT_SECRET/.test(e.message),
  );
});

test('loadConfig: empty value counts as missing', () => {
  const f = tmpFile(FULL.replace(/^REDIS_URL=.*$/m, 'REDIS_URL='));
  assert.throws(() => loadConfig({ role: 'server', env: { AKIG_ENV_FILE: f } }), (e) => e.key === 'REDIS_URL');
});

test('loadConfig: worker does not need REDIS_URL / JWT_SECRET', () => {
  const f = tmpFile(FULL.replace(/^REDIS_URL=.*$/m, '').replace(/^JWT_SECRET=.*$/m, ''));
  const cfg = loadConfig({ role: 'worker', env: { AKIG_ENV_FILE: f } });
  assert.equal(cfg.role, 'worker');
});

test('loadConfig: invalid integers, URLs and relative maintenance path are rejected', () => {
  for (const [re, line, key] of [
    [/^PORT=.*$/m, 'PORT=http', 'PORT'],
    [/^WORKER_INTERVAL_MS=.*$/m, 'WORKER_INTERVAL_MS=-5', 'WORKER_INTERVAL_MS'],
    [/^DATABASE_URL=.*$/m, 'DATABASE_URL=not a url', 'DATABASE_URL'],
    [/^MAINTENANCE_FILE=.*$/m, 'MAINTENANCE_FILE=relative.flag', 'MAINTENANCE_FILE'],
  ]) {
    const f = tmpFile(FULL.replace(re, line));
    assert.throws(() => loadConfig({ role: 'server', env: { AKIG_ENV_FILE: f } }), (e) => e.key === key, key);
  }
});

test('loadConfig: unreadable env file is a ConfigError naming AKIG_ENV_FILE', () => {
  assert.throws(
    () => loadConfig({ env: { AKIG_ENV_FILE: '/nonexistent/akig.env' } }),
    (e) => e instanceof ConfigError && e.key === 'AKIG_ENV_FILE',
  );
});

test('describeUrl / urlPassword never expose the password in the description', () => {
  const u = 'postgresql://akig_app:s3cr%40t@127.0.0.11:5432/akig_db';
  assert.equal(describeUrl(u), 'postgresql://akig_app@127.0.0.11:5432/akig_db');
  assert.equal(urlPassword(u), 's3cr@t');
  assert.equal(urlPassword('redis://127.0.0.31:6379/0'), null);
});

test('server.js exits 1 naming the missing key, without printing secrets', () => {
  const f = tmpFile(FULL.replace(/^DATABASE_URL=.*$/m, ''));
  const env = { PATH: process.env.PATH, AKIG_ENV_FILE: f };
  const r = spawnSync(process.execPath, [path.join(__dirname, '..', 'src', 'server.js')], { env, encoding: 'utf8', timeout: 10000 });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /DATABASE_URL/);
  const out = r.stdout + r.stderr;
  for (const secret of ['jwt secret # not a comment', 'tw-token', 'SG.key', 'redispass']) {
    assert.ok(!out.includes(secret), `output leaks ${secret}`);
  }
});
