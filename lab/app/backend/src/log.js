'use strict';
// Structured JSON logging that never prints secrets.
//
// Every string that goes out is passed through redact():
//   - registered secret values (JWT_SECRET, provider keys, DB/Redis passwords)
//     are replaced by "***";
//   - credentials embedded in URLs (scheme://user:pass@host) are masked;
//   - fields whose *name* looks secret (password, secret, token, authorization,
//     api_key...) are replaced wholesale.
const crypto = require('crypto');

const secrets = new Set();
const SECRET_KEY_RE = /(pass(word)?|secret|token|authorization|api[_-]?key|cookie)$/i;
const URL_CRED_RE = /([a-z][a-z0-9+.-]*:\/\/)([^:@\/\s]*):([^@\/\s]*)@/gi;

function registerSecret(value) {
  if (typeof value === 'string' && value.length >= 4) secrets.add(value);
}

function clearSecrets() {
  secrets.clear();
}

function fingerprint(value) {
  if (value === undefined || value === null || value === '') return null;
  return crypto.createHash('sha256').update(String(value)).digest('hex').slice(0, 12);
}

function redact(str) {
  if (typeof str !== 'string') return str;
  let out = str.replace(URL_CRED_RE, (m, scheme, user) => `${scheme}${user}:***@`);
  // Longest first so that a secret containing another one is fully masked.
  const list = [...secrets].sort((a, b) => b.length - a.length);
  for (const s of list) {
    if (out.includes(s)) out = out.split(s).join('***');
    const enc = encodeURIComponent(s);
    if (enc !== s && out.includes(enc)) out = out.split(enc).join('***');
  }
  return out;
}

function sanitize(value, depth = 0) {
  if (depth > 6) return '[depth]';
  if (typeof value === 'string') return redact(value);
  if (value === null || typeof value !== 'object') return value;
  if (value instanceof Error) return errorInfo(value);
  if (Array.isArray(value)) return value.map((v) => sanitize(v, depth + 1));
  const out = {};
  for (const [k, v] of Object.entries(value)) {
    if (SECRET_KEY_RE.test(k) && v !== null && v !== undefined && typeof v !== 'boolean') {
      out[k] = '***';
    } else {
      out[k] = sanitize(v, depth + 1);
    }
  }
  return out;
}

// Short, secret-free description of an error: class, code, first line of the
// message. Never the stack, never the full object (pg errors carry the query
// parameters, ioredis errors the command arguments).
function errorInfo(err) {
  if (!err) return { error_class: 'Error', message: 'unknown error' };
  const info = { error_class: (err.constructor && err.constructor.name) || err.name || 'Error' };
  const msg = String(err.message || '').split('\n')[0].slice(0, 200);
  // Redis reply errors carry their code as the first word (WRONGTYPE, NOAUTH...).
  const code = err.code || (err.cause && err.cause.code) || (/^([A-Z][A-Z_]{2,})\s/.exec(msg) || [])[1];
  if (code) info.code = String(code);
  if (msg) info.message = redact(msg);
  return info;
}

// Short code suitable for API payloads: ECONNREFUSED, ETIMEDOUT, timeout,
// 28P01 (auth failed)...
function errorCode(err) {
  if (!err) return 'unknown';
  if (err.code) return String(err.code);
  if (err.cause && err.cause.code) return String(err.cause.code);
  const m = /^([A-Z][A-Z_]{2,})\s/.exec(String(err.message || ''));
  if (m) return m[1];
  if (err.name === 'TimeoutError' || /timeout/i.test(err.message || '')) return 'timeout';
  return (err.constructor && err.constructor.name) || 'Error';
}

let service = 'akig';
function setService(name) {
  service = name;
}

function write(level, msg, fields) {
  const line = {
    ts: new Date().toISOString(),
    level,
    service,
    pid: process.pid,
    msg: redact(String(msg)),
    ...sanitize(fields || {}),
  };
  const text = JSON.stringify(line) + '\n';
  if (level === 'error' || level === 'warn') process.stderr.write(text);
  else process.stdout.write(text);
}

// Exit with `code` once pending log lines are out. Under pm2 the process'
// stdout/stderr are forwarded over IPC asynchronously: an immediate
// process.exit() would drop the last lines (e.g. the configuration error that
// explains a crash loop), so give them a moment.
function exitAfterFlush(code) {
  process.exitCode = code;
  const delay = typeof process.send === 'function' ? 300 : 20;
  setTimeout(() => process.exit(code), delay);
}

module.exports = {
  exitAfterFlush,
  registerSecret,
  clearSecrets,
  fingerprint,
  redact,
  sanitize,
  errorInfo,
  errorCode,
  setService,
  info: (msg, fields) => write('info', msg, fields),
  warn: (msg, fields) => write('warn', msg, fields),
  error: (msg, fields) => write('error', msg, fields),
};
