'use strict';
// Frontend build and static server (lab/app/frontend), run on a temporary
// copy; the server listens on an ephemeral port of 127.0.0.1.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn, spawnSync } = require('child_process');

const FRONTEND = path.resolve(__dirname, '..', '..', 'frontend');
const tmpDirs = [];
test.after(() => tmpDirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function copyFrontend() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'akig-front-'));
  tmpDirs.push(dir);
  for (const f of ['build.js', 'serve.js', 'package.json']) fs.copyFileSync(path.join(FRONTEND, f), path.join(dir, f));
  fs.mkdirSync(path.join(dir, 'src'));
  for (const f of fs.readdirSync(path.join(FRONTEND, 'src'))) {
    fs.copyFileSync(path.join(FRONTEND, 'src', f), path.join(dir, 'src', f));
  }
  return dir;
}

function build(dir) {
  return spawnSync(process.execPath, ['build.js'], {
    cwd: dir,
    encoding: 'utf8',
    env: { PATH: process.env.PATH, AKIG_REVISION: 'abc1234def' },
  });
}

function startServer(dir) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['serve.js'], {
      cwd: dir,
      env: { PATH: process.env.PATH, HOST: '127.0.0.1', PORT: '0', BACKEND_URL: 'http://127.0.0.1:9' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`server did not start: ${buf}`)), 5000);
    child.stdout.on('data', (c) => {
      buf += c;
      const m = /"msg":"listening","listen":"127\.0\.0\.1:(\d+)"/.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve({ child, base: `http://127.0.0.1:${m[1]}` });
      }
    });
    child.on('exit', (code) => reject(new Error(`server exited ${code}: ${buf}`)));
  });
}

test('build writes dist with a content-hashed bundle', () => {
  const dir = copyFrontend();
  const r = build(dir);
  assert.equal(r.status, 0, r.stderr);
  const dist = path.join(dir, 'dist');
  const files = fs.readdirSync(dist).sort();
  const bundle = files.find((f) => /^app\.[0-9a-f]{10}\.js$/.test(f));
  assert.ok(bundle, files.join(','));
  assert.deepEqual(files.filter((f) => f !== bundle), ['build.json', 'index.html', 'style.css']);
  const html = fs.readFileSync(path.join(dist, 'index.html'), 'utf8');
  assert.ok(html.includes(`src="/${bundle}"`));
  assert.ok(!html.includes('{{'));
  const info = JSON.parse(fs.readFileSync(path.join(dist, 'build.json'), 'utf8'));
  assert.equal(info.revision, 'abc1234def');
  assert.ok(!Number.isNaN(Date.parse(info.built_at)));
});

test('a syntax error fails the build (exit 1) and leaves no usable dist', () => {
  const dir = copyFrontend();
  assert.equal(build(dir).status, 0);
  fs.appendFileSync(path.join(dir, 'src', 'app.js'), '\nfunction broken( {\n');
  const r = build(dir);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /SyntaxError/);
  assert.equal(fs.existsSync(path.join(dir, 'dist', 'index.html')), false);
});

test('serve.js: healthz, SPA routes, broken build, API proxy failure', async (t) => {
  const dir = copyFrontend();
  assert.equal(build(dir).status, 0);
  const { child, base } = await startServer(dir);
  t.after(() => child.kill('SIGTERM'));

  let r = await fetch(`${base}/healthz`);
  assert.equal(r.status, 200);
  const h = await r.json();
  assert.equal(h.status, 'ok');
  assert.equal(h.build.revision, 'abc1234def');
  for (const p of ['/', '/contrats', '/paiements', '/contrats/']) {
    r = await fetch(base + p);
    assert.equal(r.status, 200, p);
    assert.match(await r.text(), /<title>AKIG/);
  }
  r = await fetch(`${base}/${h.build.app_js}`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /javascript/);
  assert.equal((await fetch(`${base}/nope`)).status, 404);
  assert.equal((await fetch(`${base}/api/health`)).status, 502); // backend unreachable

  fs.unlinkSync(path.join(dir, 'dist', h.build.app_js)); // bundle gone
  r = await fetch(`${base}/healthz`);
  assert.equal(r.status, 500);
  assert.equal((await r.json()).error, 'Frontend build missing or broken');
  assert.equal((await fetch(`${base}/contrats`)).status, 500);

  assert.equal(build(dir).status, 0); // rebuild fixes it without restart
  assert.equal((await fetch(`${base}/healthz`)).status, 200);
});
