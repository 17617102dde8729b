'use strict';
// Read-only maintenance mode: while MAINTENANCE_FILE exists, writes are
// refused with 503. Checked on every request (fs.existsSync) so that the
// runbook can toggle it without a reload.
//
// The user banner ("Notifier utilisateurs"): while the file `banner.txt` next
// to MAINTENANCE_FILE exists, its text (UTF-8, first BANNER_MAX characters)
// is shown to users by GET /api/banner and /api/health (the frontend shows
// it). Read on every request too; it does not block anything.
const fs = require('fs');
const path = require('path');

const BANNER_NAME = 'banner.txt';
const BANNER_MAX = 500;

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

// The banner file of a maintenance file: banner.txt in the same directory ('' without one).
function bannerFile(maintenanceFile) {
  return maintenanceFile ? path.join(path.dirname(maintenanceFile), BANNER_NAME) : '';
}

// { message, since } while the banner file holds text, else null. Never throws.
function readBanner(file) {
  if (!file) return null;
  try {
    const st = fs.statSync(file);
    const message = fs.readFileSync(file, 'utf8').replace(/\s+/g, ' ').trim().slice(0, BANNER_MAX);
    return message ? { message, since: st.mtime.toISOString() } : null;
  } catch {
    return null;
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

module.exports = {
  isMaintenance,
  isWriteBlocked,
  middleware,
  bannerFile,
  readBanner,
  MESSAGE,
  WRITE_METHODS,
  ALLOWED_WRITE_PATHS,
  BANNER_MAX,
};
