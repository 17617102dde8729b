'use strict';
const Redis = require('ioredis');
const log = require('./log');

function createRedis(cfg) {
  const client = new Redis(cfg.REDIS_URL, {
    connectTimeout: 1500,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: true,
    retryStrategy: (times) => Math.min(200 * times, 2000),
    reconnectOnError: () => false,
    lazyConnect: false,
  });
  let lastLog = 0;
  // Last connection-level error code (ECONNREFUSED, WRONGPASS...), reported
  // by the health check instead of ioredis' generic retry errors.
  client.lastErrorCode = null;
  client.on('error', (err) => {
    client.lastErrorCode = log.errorCode(err);
    const now = Date.now();
    if (now - lastLog > 5000) {
      lastLog = now;
      log.warn('redis error', log.errorInfo(err));
    }
  });
  client.on('ready', () => {
    client.lastErrorCode = null;
    log.info('redis ready');
  });
  return client;
}

module.exports = { createRedis };
