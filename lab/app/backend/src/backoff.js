'use strict';
// Retry delay for the notification worker.
//
// attempts = number of attempts made so far, including the one that just
// failed (1 after the first failure). Delay = min(2^attempts, 60) seconds.
// A provider Retry-After header (delta-seconds or HTTP-date) takes precedence
// when present and valid, capped at 60 seconds.
const MAX_BACKOFF_S = 60;

function parseRetryAfter(value, now = Date.now()) {
  if (value === undefined || value === null) return null;
  const v = String(value).trim();
  if (v === '') return null;
  if (/^\d+(\.\d+)?$/.test(v)) return Math.ceil(Number(v));
  if (!/[A-Za-z]{3}/.test(v)) return null; // HTTP-date has day/month names
  const t = Date.parse(v);
  if (Number.isNaN(t)) return null;
  return Math.max(0, Math.ceil((t - now) / 1000));
}

function backoffSeconds(attempts, retryAfter, now = Date.now()) {
  const ra = parseRetryAfter(retryAfter, now);
  if (ra !== null) return Math.min(Math.max(ra, 1), MAX_BACKOFF_S);
  const n = Math.max(0, Math.floor(Number(attempts) || 0));
  if (n >= 6) return MAX_BACKOFF_S; // 2^6 = 64 > 60, avoids huge exponents
  return Math.min(2 ** n, MAX_BACKOFF_S);
}

module.exports = { backoffSeconds, parseRetryAfter, MAX_BACKOFF_S };
