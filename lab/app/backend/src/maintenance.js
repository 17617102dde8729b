'use strict';
// Read-only maintenance mode: while MAINTENANCE_FILE exists, writes are
// refused with 503. Checked on every request (fs.existsSync) so that the
// runbook can toggle it without a reload.
const fs = require('fs');

const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
// Writes that stay allowed in maintenance: logging in (sessions live in
// Redis, not in the database) and the manual provider test.
const ALLOWED_WRITE_PATHS = new Set(['/api/login', '/api/notifications/test']);
const MESSAGE = "Maintenance en cours - pas d'écritures";

function isMaintenance(file) {
  if (!file) return false;
  try {
    return fs.existsSync(file);
  } catch {
    return false;
  }
}

function normalisePath(p) {
  const s = String(p || '/').split('?')[0].toLowerCase();
  return s.length > 1 ? s.replace(/\/+$/, '') : s;
}

function isWriteBlocked(method, urlPath, file) {
  if (!WRITE_METHODS.has(String(method).toUpperCase())) return false;
  if (ALLOWED_WRITE_PATHS.has(normalisePath(urlPath))) return false;
  return isMaintenance(file);
}

function middleware(getFile) {
  return (req, res, next) => {
    if (isWriteBlocked(req.method, req.path, getFile())) {
      res.status(503).set('Retry-After', '60').json({ error: MESSAGE });
      return;
    }
    next();
  };
}

module.exports = { isMaintenance, isWriteBlocked, middleware, MESSAGE, WRITE_METHODS, ALLOWED_WRITE_PATHS };
