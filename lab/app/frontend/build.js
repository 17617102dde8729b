#!/usr/bin/env node
'use strict';
// AKIG frontend build (no dependencies).
//
// 1. Validate sources: src/app.js must compile (new vm.Script: a syntax error
//    fails the build with exit 1), src/index.html must reference {{APP_JS}},
//    src/style.css must have balanced braces.
// 2. Write dist/index.html, dist/app.<contenthash>.js, dist/style.css and
//    dist/build.json {revision, built_at, app_js} into a temporary directory,
//    then swap it in place of dist/.
//
// Like the production pipeline (clean output dir, then compile), a FAILED
// build leaves no usable dist/: the previous one is removed, so serve.js
// answers 500 "Frontend build missing or broken" until a good build is made.
// Set KEEP_DIST_ON_FAILURE=1 to keep the previous dist/ instead.
const fs = require('fs');
const path = require('path');
const vm = require('vm');
const crypto = require('crypto');
const { execFileSync } = require('child_process');

const SRC = path.join(__dirname, 'src');
const DIST = path.resolve(process.env.DIST_DIR || path.join(__dirname, 'dist'));

function fail(msg) {
  process.stderr.write(`build failed: ${msg}\n`);
  if (!process.env.KEEP_DIST_ON_FAILURE) {
    fs.rmSync(DIST, { recursive: true, force: true });
    process.stderr.write(`removed ${DIST} (no usable build)\n`);
  }
  process.exit(1);
}

function read(name) {
  const p = path.join(SRC, name);
  try {
    return fs.readFileSync(p, 'utf8');
  } catch (err) {
    return fail(`cannot read src/${name}: ${err.code || err.message}`);
  }
}

function revision() {
  if (process.env.AKIG_REVISION) return process.env.AKIG_REVISION;
  try {
    const out = execFileSync('git', ['rev-parse', 'HEAD'], {
      cwd: __dirname,
      timeout: 3000,
      stdio: ['ignore', 'pipe', 'ignore'],
      encoding: 'utf8',
    }).trim();
    return /^[0-9a-f]{7,64}$/.test(out) ? out : 'unknown';
  } catch {
    return 'unknown';
  }
}

const js = read('app.js');
const html = read('index.html');
const css = read('style.css');

try {
  // Compile only (never run): throws SyntaxError with line/column.
  new vm.Script(js, { filename: 'src/app.js' });
} catch (err) {
  const where = (err.stack || '').split('\n')[0];
  fail(`src/app.js does not compile: ${err.name}: ${err.message}${where && !where.includes(err.message) ? ` (${where})` : ''}`);
}
if (!html.includes('{{APP_JS}}')) fail('src/index.html does not reference {{APP_JS}}');
{
  const stripped = css.replace(/\/\*[\s\S]*?\*\//g, '');
  const open = (stripped.match(/{/g) || []).length;
  const close = (stripped.match(/}/g) || []).length;
  if (open !== close) fail(`src/style.css has unbalanced braces (${open} '{' vs ${close} '}')`);
}

const hash = (s) => crypto.createHash('sha256').update(s).digest('hex').slice(0, 10);
const appJs = `app.${hash(js)}.js`;
const rev = revision();
const builtAt = new Date().toISOString();
const index = html
  .split('{{APP_JS}}').join(appJs)
  .split('{{STYLE_HASH}}').join(hash(css))
  .split('{{REVISION_SHORT}}').join(rev.slice(0, 8))
  .split('{{REVISION}}').join(rev)
  .split('{{BUILT_AT}}').join(builtAt);

const tmp = `${DIST}.tmp-${process.pid}`;
fs.rmSync(tmp, { recursive: true, force: true });
fs.mkdirSync(tmp, { recursive: true });
fs.writeFileSync(path.join(tmp, appJs), js);
fs.writeFileSync(path.join(tmp, 'style.css'), css);
fs.writeFileSync(path.join(tmp, 'index.html'), index);
fs.writeFileSync(
  path.join(tmp, 'build.json'),
  JSON.stringify({ revision: rev, built_at: builtAt, app_js: appJs }, null, 2) + '\n',
);
const old = `${DIST}.old-${process.pid}`;
if (fs.existsSync(DIST)) fs.renameSync(DIST, old);
fs.renameSync(tmp, DIST);
fs.rmSync(old, { recursive: true, force: true });

process.stdout.write(`build ok: ${path.relative(process.cwd(), DIST) || '.'}/index.html, ${appJs}, style.css (revision ${rev})\n`);
