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

// Run `fn` over `items`, at most `limit` at a time, in order. Once `shouldStop()` returns true no
// new item is started; the items already started run to their end. Returns the items that were
// never started (the caller gives them back, e.g. to the queue) in their original order.
async function mapLimit(items, limit, fn, { shouldStop = () => false } = {}) {
  const started = new Array(items.length).fill(false);
  let next = 0;
  async function lane() {
    while (next < items.length && !shouldStop()) {
      const idx = next++;
      started[idx] = true;
      await fn(items[idx]);
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, lane));
  return items.filter((_, idx) => !started[idx]);
}

module.exports = { withTimeout, TimeoutError, parsePaging, mapLimit };
