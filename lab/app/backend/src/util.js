'use strict';

class TimeoutError extends Error {
  constructor(ms) {
    super(`timeout after ${ms} ms`);
    this.name = 'TimeoutError';
    this.code = 'timeout';
  }
}

// Resolve/reject with `promise`, or reject with TimeoutError after `ms`.
function withTimeout(promise, ms) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(ms)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

function parsePaging(query, { defPer = 20, maxPer = 100 } = {}) {
  let page = Number.parseInt(query.page, 10);
  let per = Number.parseInt(query.per_page, 10);
  if (!Number.isInteger(page) || page < 1) page = 1;
  if (!Number.isInteger(per) || per < 1) per = defPer;
  if (per > maxPer) per = maxPer;
  if (page > 1000000) page = 1000000;
  return { page, per_page: per, offset: (page - 1) * per };
}

module.exports = { withTimeout, TimeoutError, parsePaging };
