'use strict';
const { Pool, types } = require('pg');
const log = require('./log');

// DATE columns as 'YYYY-MM-DD' strings (no timezone shifting), BIGINT as
// numbers (ids and counts in this app stay far below 2^53).
types.setTypeParser(1082, (v) => v);
types.setTypeParser(20, (v) => (v === null ? null : Number(v)));

// SQLSTATE classes/codes that mean "the database is not reachable or not
// usable right now" (as opposed to a bug in the query).
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EPIPE', 'EAI_AGAIN',
  '57P01', '57P02', '57P03', // admin/crash shutdown, cannot connect now
  '53300', // too many connections
  '28P01', '28000', // auth failed
  '3D000', // database does not exist
  // PgBouncer in front of PostgreSQL: a dead server is reported to the client as a protocol/connection error
  // ('server conn crashed?', 'pgbouncer cannot connect to server', 'query_wait_timeout'), not as a socket error
  '08P01', '08006', '08001', '08003', '08004',
]);

function createPool(cfg, { application_name = 'akig-backend', max = cfg.DB_POOL_MAX } = {}) {
  const pool = new Pool({
    connectionString: cfg.DATABASE_URL,
    max,
    connectionTimeoutMillis: cfg.DB_CONNECT_TIMEOUT_MS,
    query_timeout: cfg.DB_QUERY_TIMEOUT_MS,
    idleTimeoutMillis: 10000,
    keepAlive: true,
    application_name,
  });
  let lastLog = 0;
  // Idle clients emit 'error' when the server goes away; without a listener
  // the process would crash.
  pool.on('error', (err) => {
    const now = Date.now();
    if (now - lastLog > 5000) {
      lastLog = now;
      log.warn('database idle client error', log.errorInfo(err));
    }
  });
  return pool;
}

function isUnavailable(err) {
  if (!err) return false;
  if (UNAVAILABLE_CODES.has(err.code)) return true;
  const msg = String(err.message || '');
  return /timeout|Connection terminated|connect ECONNREFUSED|Client has encountered a connection error|the database system is/i.test(msg);
}

// Map a database error to an HTTP answer for API routes.
function httpError(err) {
  if (err && err.code === '25006') return { status: 503, body: { error: 'Database is read-only' } };
  if (isUnavailable(err)) return { status: 503, body: { error: 'Database unavailable' } };
  return { status: 500, body: { error: 'Internal error' } };
}

module.exports = { createPool, isUnavailable, httpError };
