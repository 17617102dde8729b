'use strict';
// AKIG notification worker (pm2 process `akig-worker`, fork mode).
//
// Every WORKER_INTERVAL_MS: claim up to WORKER_BATCH due rows of
// notification_queue, send them through Twilio (sms) / SendGrid (email) with
// the row's Idempotency-Key, then record the result (see queue.js for the
// delivery semantics). The rows of a paused provider's channel
// (notification_provider_state.paused, read every tick) are not claimed, and
// rows claimed by a replay (claimed_by 'replay:%') are never reset here. Database or provider outages are logged and retried;
// the worker never exits because of them.
//
// SIGINT/SIGTERM (pm2 stop/restart/reload): no new send starts; the sends in
// flight (at most WORKER_CONCURRENCY) finish and are recorded; the rows of the
// batch that were never sent go back to 'pending' at once (not after the
// 2-minute stuck reset), then the pool closes and the worker exits 0. A batch
// can take WORKER_BATCH / WORKER_CONCURRENCY * SEND_TIMEOUT_MS (50 s with the
// defaults); a shutdown takes at most SEND_TIMEOUT_MS + SHUTDOWN_TIMEOUT_MS
// (shutdownBudgetMs), and pm2's kill_timeout for akig-worker must exceed it,
// or pm2 SIGKILLs rows that were sent but not recorded (re-sent later).
const log = require('./log');
log.setService('akig-worker');
const config = require('./config');
const { mapLimit } = require('./util');
const { SEND_TIMEOUT_MS } = require('./providers');

// Longest a shutdown may take: the sends in flight end within SEND_TIMEOUT_MS, then their
// results, the release of the unsent rows and the pool close get SHUTDOWN_TIMEOUT_MS.
function shutdownBudgetMs(cfg) {
  return SEND_TIMEOUT_MS + cfg.SHUTDOWN_TIMEOUT_MS;
}

function main(cfg) {
  const fingerprints = config.registerSecrets(cfg);
  const revision = config.detectRevision();

  const { createPool } = require('./db');
  const providers = require('./providers');
  const queue = require('./queue');

  const pool = createPool(cfg, { application_name: 'akig-worker', max: Math.min(cfg.DB_POOL_MAX, 4) });

  let stopping = false;
  let timer = null;
  let current = null;
  let lastReset = 0;
  let consecutiveErrors = 0;
  let lastErrorLog = 0;
  let lastPaused = '';
  // Results whose database update failed (DB outage right after the send):
  // retried first on the next ticks so the row does not get re-sent later.
  const pendingUpdates = new Map();

  log.info('starting', {
    revision,
    env_file: cfg.envFile,
    database: config.describeUrl(cfg.DATABASE_URL),
    twilio: cfg.TWILIO_BASE_URL,
    sendgrid: cfg.SENDGRID_BASE_URL,
    interval_ms: cfg.WORKER_INTERVAL_MS,
    batch: cfg.WORKER_BATCH,
    max_attempts: cfg.WORKER_MAX_ATTEMPTS,
    secret_fingerprints: fingerprints,
  });

  async function flushPendingUpdates() {
    for (const [id, o] of pendingUpdates) {
      await queue.applyOutcome(pool, o); // throws if the DB is still down
      pendingUpdates.delete(id);
    }
  }

  async function tick() {
    await flushPendingUpdates();
    if (Date.now() - lastReset > 60000) {
      const n = await queue.resetStuck(pool);
      lastReset = Date.now();
      if (n) log.warn('reset rows stuck in sending', { count: n });
    }
    // The pause switch is read every tick (one small query): a runbook's pause takes effect
    // within WORKER_INTERVAL_MS, without a reload.
    const paused = await queue.pausedProviders(pool);
    const key = paused.join(',');
    if (key !== lastPaused) {
      if (paused.length) log.warn('providers paused: their channels wait in the queue', { paused });
      else if (lastPaused) log.info('providers unpaused', { was: lastPaused.split(',') });
      lastPaused = key;
    }
    const rows = await queue.claimBatch(pool, cfg.WORKER_BATCH, queue.claimableChannels(paused));
    if (!rows.length) return;
    const stats = { claimed: rows.length, sent: 0, retry: 0, failed: 0, released: 0 };
    const unsent = await mapLimit(rows, cfg.WORKER_CONCURRENCY, async (row) => {
      const res = await providers.send(cfg, row);
      const o = queue.outcome(row, res, cfg.WORKER_MAX_ATTEMPTS);
      stats[o.status === 'sent' ? 'sent' : o.status === 'failed' ? 'failed' : 'retry']++;
      const fields = {
        id: row.id,
        channel: row.channel,
        kind: row.kind,
        provider: res.provider,
        provider_status: res.provider_status,
        attempts: o.attempts,
      };
      if (o.status === 'sent') log.info('notification sent', fields);
      else if (o.status === 'failed') log.error('notification failed permanently', { ...fields, error: o.last_error });
      else log.warn('notification send failed, will retry', { ...fields, error: o.last_error, retry_in_s: o.delay_s });
      try {
        await queue.applyOutcome(pool, o);
      } catch (err) {
        pendingUpdates.set(o.id, o);
        log.error('could not record send result, will retry', { id: row.id, ...log.errorInfo(err) });
      }
    }, { shouldStop: () => stopping });
    if (unsent.length) {
      // Shutting down: these rows were claimed but never sent; give them back now.
      stats.released = await queue.release(pool, unsent.map((r) => r.id));
    }
    log.info(stopping ? 'batch cut short by shutdown' : 'batch done', stats);
  }

  async function loop() {
    timer = null;
    if (stopping) return;
    current = tick()
      .then(() => {
        if (consecutiveErrors) log.info('worker recovered', { after_errors: consecutiveErrors });
        consecutiveErrors = 0;
      })
      .catch((err) => {
        consecutiveErrors++;
        const now = Date.now();
        if (consecutiveErrors === 1 || now - lastErrorLog > 10000) {
          lastErrorLog = now;
          log.error('worker tick failed', { ...log.errorInfo(err), consecutive_errors: consecutiveErrors });
        }
      });
    await current;
    current = null;
    if (stopping) return;
    // Back off a little while the database is down, never more than 5 s.
    const delay = consecutiveErrors ? Math.min(cfg.WORKER_INTERVAL_MS * 2 ** Math.min(consecutiveErrors, 4), 5000) : cfg.WORKER_INTERVAL_MS;
    timer = setTimeout(loop, delay);
  }

  async function stop(reason) {
    if (stopping) return;
    stopping = true;
    log.info('shutting down', { reason });
    if (timer) clearTimeout(timer);
    const guard = setTimeout(() => {
      log.warn('shutdown timeout, forcing exit', { budget_ms: shutdownBudgetMs(cfg) });
      log.exitAfterFlush(1);
    }, shutdownBudgetMs(cfg));
    guard.unref();
    if (current) await current;
    try {
      await flushPendingUpdates();
    } catch (err) {
      log.error('could not record send results before exit; rows will be reset from sending', {
        count: pendingUpdates.size,
        ...log.errorInfo(err),
      });
    }
    await pool.end().catch(() => {});
    log.info('stopped', { reason });
    log.exitAfterFlush(0);
  }

  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('message', (msg) => {
    if (msg === 'shutdown') stop('shutdown message');
  });
  process.on('unhandledRejection', (err) => log.error('unhandled rejection', log.errorInfo(err)));

  // Reset rows left in 'sending' by a previous crash, then start looping.
  (async () => {
    try {
      const n = await queue.resetStuck(pool);
      lastReset = Date.now();
      if (n) log.warn('reset rows stuck in sending', { count: n });
    } catch (err) {
      log.error('initial stuck-row reset failed (will retry)', log.errorInfo(err));
    }
    if (typeof process.send === 'function') process.send('ready');
    loop();
  })();
}

const cfg = config.loadOrExit('worker');
if (cfg) main(cfg);
