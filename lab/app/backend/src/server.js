'use strict';
// AKIG API process. Runs standalone (`node src/server.js`) or under pm2 in
// cluster mode (several instances sharing HOST:PORT).
//
// Graceful stop (pm2 reload/stop sends SIGINT, or the 'shutdown' message when
// shutdown_with_message is set): stop accepting connections, let in-flight
// requests finish, close the PostgreSQL pool and the Redis client, exit 0.
// A guard timer (SHUTDOWN_TIMEOUT_MS, below pm2's kill_timeout) forces the
// exit if something hangs.
const http = require('http');
const log = require('./log');
log.setService('akig-backend');
const config = require('./config');

function main(cfg) {
  const fingerprints = config.registerSecrets(cfg);
  const revision = config.detectRevision();

  const { createPool } = require('./db');
  const { createRedis } = require('./cache');
  const { createApp } = require('./app');

  const pool = createPool(cfg, { application_name: 'akig-backend' });
  const redis = createRedis(cfg);
  const state = { shuttingDown: false };
  const app = createApp({ cfg, pool, redis, revision, state });

  const server = http.createServer(app);
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 10000;

  log.info('starting', {
    revision,
    env_file: cfg.envFile,
    listen: `${cfg.HOST}:${cfg.PORT}`,
    database: config.describeUrl(cfg.DATABASE_URL),
    redis: config.describeUrl(cfg.REDIS_URL),
    jwt_fingerprint: fingerprints.jwt_secret_fp,
    secret_fingerprints: fingerprints,
    maintenance_file: cfg.MAINTENANCE_FILE,
    node: process.version,
    instance: process.env.NODE_APP_INSTANCE !== undefined ? Number(process.env.NODE_APP_INSTANCE) : null,
  });

  server.on('error', (err) => {
    log.error('listen failed', { ...log.errorInfo(err), listen: `${cfg.HOST}:${cfg.PORT}` });
    log.exitAfterFlush(1);
  });

  server.listen(cfg.PORT, cfg.HOST, () => {
    log.info('listening', { listen: `${cfg.HOST}:${cfg.PORT}`, revision });
    if (typeof process.send === 'function') process.send('ready');
  });

  function shutdown(reason) {
    if (state.shuttingDown) return;
    state.shuttingDown = true;
    log.info('shutting down', { reason });
    const guard = setTimeout(() => {
      log.warn('shutdown timeout, forcing exit', { timeout_ms: cfg.SHUTDOWN_TIMEOUT_MS });
      log.exitAfterFlush(1);
    }, cfg.SHUTDOWN_TIMEOUT_MS);
    guard.unref();
    // Stop accepting; idle keep-alive sockets are closed, active requests
    // finish (their responses carry Connection: close).
    server.close(async () => {
      await Promise.allSettled([pool.end(), redis.quit().catch(() => redis.disconnect())]);
      log.info('stopped', { reason });
      log.exitAfterFlush(0);
    });
    server.closeIdleConnections();
  }

  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('message', (msg) => {
    if (msg === 'shutdown') shutdown('shutdown message');
  });
  process.on('unhandledRejection', (err) => log.error('unhandled rejection', log.errorInfo(err)));
  process.on('uncaughtException', (err) => {
    log.error('uncaught exception', log.errorInfo(err));
    log.exitAfterFlush(1);
  });
}

const cfg = config.loadOrExit('server');
if (cfg) main(cfg);
