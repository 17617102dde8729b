'use strict';
// Configuration loader.
//
// Both backend processes read the KEY=VALUE file named by AKIG_ENV_FILE at
// boot. Values from the file win over variables already present in
// process.env (the file is the single source of truth that the runbooks edit;
// process.env only supplies keys the file does not define).
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');
const log = require('./log');

class ConfigError extends Error {
  constructor(message, key) {
    super(message);
    this.name = 'ConfigError';
    this.key = key;
  }
}

// Parse the text of an env file. Supports:
//   KEY=value            # trailing comment (unquoted values only)
//   export KEY=value
//   KEY="double quoted"  with \n \t \" \\ escapes
//   KEY='single quoted'  literal
//   blank lines and lines starting with #
function parseEnvFile(text) {
  const out = {};
  const lines = String(text).replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((raw, idx) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) {
      throw new ConfigError(`env file line ${idx + 1}: expected KEY=VALUE`);
    }
    const key = m[1];
    let value = m[2];
    if (value.startsWith('"')) {
      const end = findClosingQuote(value, '"');
      if (end < 0) throw new ConfigError(`env file line ${idx + 1}: unterminated quote for ${key}`, key);
      value = value
        .slice(1, end)
        .replace(/\\(["\\nrt])/g, (_, c) => ({ n: '\n', r: '\r', t: '\t' }[c] || c));
    } else if (value.startsWith("'")) {
      const end = value.indexOf("'", 1);
      if (end < 0) throw new ConfigError(`env file line ${idx + 1}: unterminated quote for ${key}`, key);
      value = value.slice(1, end);
    } else {
      // Unquoted: an inline comment starts at " #".
      const hash = value.search(/\s#/);
      if (hash >= 0) value = value.slice(0, hash);
      value = value.trim();
    }
    out[key] = value;
  });
  return out;
}

function findClosingQuote(value, q) {
  for (let i = 1; i < value.length; i++) {
    if (value[i] === '\\') {
      i++;
      continue;
    }
    if (value[i] === q) return i;
  }
  return -1;
}

const SECRET_KEYS = ['JWT_SECRET', 'TWILIO_AUTH_TOKEN', 'SENDGRID_API_KEY'];

const PROVIDER_KEYS = [
  'TWILIO_ACCOUNT_SID',
  'TWILIO_AUTH_TOKEN',
  'TWILIO_FROM',
  'TWILIO_BASE_URL',
  'SENDGRID_API_KEY',
  'SENDGRID_FROM',
  'SENDGRID_BASE_URL',
];

const REQUIRED = {
  server: ['DATABASE_URL', 'REDIS_URL', 'JWT_SECRET', 'MAINTENANCE_FILE', ...PROVIDER_KEYS],
  worker: ['DATABASE_URL', ...PROVIDER_KEYS],
};

const DEFAULTS = {
  HOST: '127.0.0.21',
  PORT: '4000',
  JWT_TTL_S: '3600',
  WORKER_INTERVAL_MS: '500',
  WORKER_BATCH: '50',
  WORKER_MAX_ATTEMPTS: '8',
  WORKER_CONCURRENCY: '5',
  DB_POOL_MAX: '10',
  DB_CONNECT_TIMEOUT_MS: '2000',
  DB_QUERY_TIMEOUT_MS: '10000',
  HEALTH_TIMEOUT_MS: '1500',
  SHUTDOWN_TIMEOUT_MS: '4000',
};

const INT_KEYS = {
  PORT: [1, 65535],
  JWT_TTL_S: [1, 31 * 24 * 3600],
  WORKER_INTERVAL_MS: [10, 3600000],
  WORKER_BATCH: [1, 1000],
  WORKER_MAX_ATTEMPTS: [1, 1000],
  WORKER_CONCURRENCY: [1, 100],
  DB_POOL_MAX: [1, 200],
  DB_CONNECT_TIMEOUT_MS: [100, 600000],
  DB_QUERY_TIMEOUT_MS: [100, 3600000],
  HEALTH_TIMEOUT_MS: [100, 60000],
  SHUTDOWN_TIMEOUT_MS: [100, 600000],
};

// Build the configuration object from the env file (if any) and `env`.
// Throws ConfigError naming the key when a required key is missing/empty or
// a numeric key is invalid.
function loadConfig({ role = 'server', env = process.env, envFile = env.AKIG_ENV_FILE } = {}) {
  let fileValues = {};
  if (envFile) {
    let text;
    try {
      text = fs.readFileSync(envFile, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read AKIG_ENV_FILE ${envFile}: ${err.code || err.message}`, 'AKIG_ENV_FILE');
    }
    fileValues = parseEnvFile(text);
  }
  const merged = { ...DEFAULTS };
  for (const [k, v] of Object.entries(env)) {
    if (v !== undefined && v !== '') merged[k] = v;
  }
  for (const [k, v] of Object.entries(fileValues)) merged[k] = v; // file wins

  const required = REQUIRED[role] || REQUIRED.server;
  for (const key of required) {
    if (merged[key] === undefined || String(merged[key]).trim() === '') {
      throw new ConfigError(`missing required configuration key ${key}`, key);
    }
  }
  const cfg = { ...merged, envFile: envFile || null, role };
  for (const [key, [min, max]] of Object.entries(INT_KEYS)) {
    const n = Number(merged[key]);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new ConfigError(`invalid value for ${key}: expected an integer in [${min}, ${max}]`, key);
    }
    cfg[key] = n;
  }
  for (const key of ['DATABASE_URL', 'REDIS_URL', 'TWILIO_BASE_URL', 'SENDGRID_BASE_URL']) {
    if (merged[key] === undefined) continue;
    try {
      new URL(merged[key]);
    } catch {
      throw new ConfigError(`invalid URL for ${key}`, key);
    }
  }
  if (cfg.MAINTENANCE_FILE && !path.isAbsolute(cfg.MAINTENANCE_FILE)) {
    throw new ConfigError('MAINTENANCE_FILE must be an absolute path', 'MAINTENANCE_FILE');
  }
  cfg.TWILIO_BASE_URL = stripSlash(cfg.TWILIO_BASE_URL);
  cfg.SENDGRID_BASE_URL = stripSlash(cfg.SENDGRID_BASE_URL);
  return cfg;
}

function stripSlash(u) {
  return typeof u === 'string' ? u.replace(/\/+$/, '') : u;
}

function urlPassword(u) {
  try {
    const p = new URL(u).password;
    return p ? decodeURIComponent(p) : null;
  } catch {
    return null;
  }
}

// "user@host:port/db" without the password, for logs.
function describeUrl(u) {
  try {
    const url = new URL(u);
    const user = url.username ? `${decodeURIComponent(url.username)}@` : '';
    return `${url.protocol}//${user}${url.host}${url.pathname}`;
  } catch {
    return 'invalid-url';
  }
}

// Register every secret of the configuration with the logger and return
// their fingerprints (sha256, first 12 hex) for the boot log, keyed
// jwt_secret_fp, twilio_auth_token_fp, sendgrid_api_key_fp,
// database_password_fp, redis_password_fp.
function registerSecrets(cfg) {
  const fps = {};
  for (const key of SECRET_KEYS) {
    if (cfg[key]) {
      log.registerSecret(cfg[key]);
      fps[`${key.toLowerCase()}_fp`] = log.fingerprint(cfg[key]);
    }
  }
  for (const [key, name] of [
    ['DATABASE_URL', 'database_password_fp'],
    ['REDIS_URL', 'redis_password_fp'],
  ]) {
    const p = cfg[key] && urlPassword(cfg[key]);
    if (p) {
      log.registerSecret(p);
      fps[name] = log.fingerprint(p);
    }
  }
  return fps;
}

// Revision of the deployed checkout: `git rev-parse HEAD` run once at boot in
// the app directory; "unknown" if it is not a git checkout or git fails.
function detectRevision(dir = path.resolve(__dirname, '..', '..')) {
  if (process.env.AKIG_REVISION) return process.env.AKIG_REVISION;
  try {
    const out = execFileSync('git', ['rev-parse', 'HEAD'], {
      cwd: dir,
      timeout: 3000,
      stdio: ['ignore', 'pipe', 'ignore'],
      encoding: 'utf8',
    }).trim();
    return /^[0-9a-f]{7,64}$/.test(out) ? out : 'unknown';
  } catch {
    return 'unknown';
  }
}

// Load the configuration, or log a message naming the faulty key, schedule
// exit(1) and return null (the caller must then do nothing else).
function loadOrExit(role) {
  try {
    return loadConfig({ role });
  } catch (err) {
    if (err instanceof ConfigError) {
      log.error(`configuration error: ${err.message}`, { key: err.key || null, env_file: process.env.AKIG_ENV_FILE || null });
      log.exitAfterFlush(1);
      return null;
    }
    throw err;
  }
}

module.exports = {
  ConfigError,
  parseEnvFile,
  loadConfig,
  loadOrExit,
  registerSecrets,
  detectRevision,
  describeUrl,
  urlPassword,
  REQUIRED,
  DEFAULTS,
};
