#!/usr/bin/env node
'use strict';
// AKIG frontend server (no dependencies).
//
//   HOST (127.0.0.21), PORT (3000), BACKEND_URL (http://127.0.0.21:4000),
//   DIST_DIR (./dist)
//
// - GET /healthz: 200 {"status":"ok","build":{...}} when dist/index.html and
//   the JS bundle it references exist; otherwise 500
//   {"status":"error","error":"Frontend build missing or broken"}.
// - SPA routes /, /contrats, /paiements -> index.html (500 when the build is
//   broken).
// - /app.<hash>.js, /style.css, /build.json: static files from DIST_DIR.
// - /api/*: proxied to BACKEND_URL (502 {"error":"Backend unavailable"} if
//   it cannot be reached).
const http = require('http');
const fs = require('fs');
const path = require('path');

const HOST = process.env.HOST || '127.0.0.21';
const PORT = Number(process.env.PORT || 3000);
const BACKEND = new URL(process.env.BACKEND_URL || 'http://127.0.0.21:4000');
const DIST = path.resolve(process.env.DIST_DIR || path.join(__dirname, 'dist'));
const SPA_ROUTES = new Set(['/', '/contrats', '/paiements']);
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
};
const BROKEN = { status: 'error', error: 'Frontend build missing or broken' };
const proxyAgent = new http.Agent({ keepAlive: false });

function log(level, msg, fields) {
  const line = JSON.stringify({ ts: new Date().toISOString(), level, service: 'akig-frontend', pid: process.pid, msg, ...fields });
  (level === 'info' ? process.stdout : process.stderr).write(line + '\n');
}

// Inspect the build on every request (cheap; lets a rebuild or a deletion be
// seen immediately).
function buildState() {
  let html;
  try {
    html = fs.readFileSync(path.join(DIST, 'index.html'), 'utf8');
  } catch {
    return { ok: false, reason: 'index.html missing' };
  }
  const m = /<script[^>]+src="\/?(app\.[0-9a-f]+\.js)"/.exec(html);
  if (!m) return { ok: false, reason: 'index.html references no bundle' };
  const bundle = path.join(DIST, m[1]);
  try {
    if (!fs.statSync(bundle).isFile() || fs.statSync(bundle).size === 0) throw new Error('empty');
  } catch {
    return { ok: false, reason: `bundle ${m[1]} missing` };
  }
  let build = { app_js: m[1] };
  try {
    build = { ...JSON.parse(fs.readFileSync(path.join(DIST, 'build.json'), 'utf8')), app_js: m[1] };
  } catch {
    /* build.json optional */
  }
  return { ok: true, html, build };
}

function send(res, status, body, type, extra) {
  const buf = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  res.writeHead(status, { 'Content-Type': type || TYPES['.json'], 'Content-Length': buf.length, ...(extra || {}) });
  res.end(buf);
}

function proxy(req, res) {
  const up = http.request(
    {
      protocol: BACKEND.protocol,
      hostname: BACKEND.hostname,
      port: BACKEND.port || 80,
      method: req.method,
      path: req.url,
      headers: { ...req.headers, host: BACKEND.host, 'x-forwarded-for': req.socket.remoteAddress, connection: 'close' },
      agent: proxyAgent,
      timeout: 30000,
    },
    (upRes) => {
      res.writeHead(upRes.statusCode, upRes.headers);
      upRes.pipe(res);
    },
  );
  up.on('timeout', () => up.destroy(Object.assign(new Error('upstream timeout'), { code: 'ETIMEDOUT' })));
  up.on('error', (err) => {
    log('warn', 'backend unavailable', { code: err.code || err.message });
    if (!res.headersSent) send(res, 502, { error: 'Backend unavailable' });
    else res.destroy();
  });
  req.pipe(up);
}

const server = http.createServer((req, res) => {
  const t0 = Date.now();
  let pathname;
  try {
    pathname = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  } catch {
    pathname = null;
  }
  res.on('finish', () => log('info', 'request', { method: req.method, path: pathname, status: res.statusCode, ms: Date.now() - t0 }));
  if (pathname === null) return send(res, 400, { error: 'Bad request' });

  if (pathname === '/api' || pathname.startsWith('/api/')) return proxy(req, res);
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: 'Method not allowed' });

  if (pathname === '/healthz') {
    const st = buildState();
    if (!st.ok) return send(res, 500, { ...BROKEN, reason: st.reason });
    return send(res, 200, { status: 'ok', build: st.build });
  }

  const route = pathname.length > 1 ? pathname.replace(/\/+$/, '') : pathname;
  if (SPA_ROUTES.has(route)) {
    const st = buildState();
    if (!st.ok) {
      return send(res, 500, `<!doctype html><title>AKIG</title><h1>500</h1><p>${BROKEN.error}</p>`, TYPES['.html']);
    }
    return send(res, 200, st.html, TYPES['.html'], { 'Cache-Control': 'no-cache' });
  }

  // Static files: flat dist/ only, no traversal.
  const name = pathname.slice(1);
  if (/^[A-Za-z0-9._-]+$/.test(name) && !name.startsWith('.') && TYPES[path.extname(name)] && name !== 'index.html') {
    const file = path.join(DIST, name);
    return fs.readFile(file, (err, data) => {
      if (err) return send(res, 404, { error: 'Not found' });
      const immutable = /^app\.[0-9a-f]+\.js$/.test(name);
      send(res, 200, data, TYPES[path.extname(name)], {
        'Cache-Control': immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
      });
    });
  }
  return send(res, 404, { error: 'Not found' });
});

server.on('error', (err) => {
  log('error', 'listen failed', { code: err.code, listen: `${HOST}:${PORT}` });
  process.exit(1);
});
server.listen(PORT, HOST, () => {
  const st = buildState();
  const addr = server.address();
  log('info', 'listening', { listen: `${addr.address}:${addr.port}`, backend: BACKEND.origin, dist: DIST, build_ok: st.ok, build: st.build || null, reason: st.reason || null });
  if (typeof process.send === 'function') process.send('ready');
});

let stopping = false;
function stop(reason) {
  if (stopping) return;
  stopping = true;
  log('info', 'shutting down', { reason });
  setTimeout(() => process.exit(1), 4000).unref();
  server.close(() => process.exit(0));
  server.closeIdleConnections();
}
process.on('SIGINT', () => stop('SIGINT'));
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('message', (m) => m === 'shutdown' && stop('shutdown message'));
