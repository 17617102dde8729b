'use strict';
// Express application (routes only). server.js wires config, pools and the
// HTTP listener; tests can build the app with stub dependencies.
const crypto = require('crypto');
const express = require('express');
const bcrypt = require('bcryptjs');
const jwt = require('jsonwebtoken');
const log = require('./log');
const maintenance = require('./maintenance');
const providers = require('./providers');
const { contractPdf } = require('./pdf');
const { withTimeout, parsePaging } = require('./util');
const db = require('./db');

const SESSION_PREFIX = 'akig:sess:';
const USER_SESSIONS_PREFIX = 'akig:user_sessions:';

// The class of an authentication failure, logged as `auth failure` {class} (never the token, the
// password or the secret) so that the on-call runbook (RB-P1-002) can count them by class.
const AUTH_FAILURE_CLASSES = [
  'invalid_signature', 'expired', 'malformed', 'unknown_user', 'bad_password', 'session_missing', 'session_corrupt',
];

// Class of a jsonwebtoken verify error (or of a token that is not there or lacks its claims).
function tokenFailureClass(err) {
  if (err && err.name === 'TokenExpiredError') return 'expired';
  if (err && err.name === 'JsonWebTokenError' && /signature/i.test(err.message || '')) return 'invalid_signature';
  return 'malformed';
}

function authFailure(cls, fields = {}) {
  log.warn('auth failure', { class: cls, ...fields });
}

function createApp({ cfg, pool, redis, revision, state = { shuttingDown: false } }) {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  const started = Date.now();
  const jwtFingerprint = log.fingerprint(cfg.JWT_SECRET);

  // Request log: one JSON line per request, no headers, no bodies, no query.
  app.use((req, res, next) => {
    const t0 = process.hrtime.bigint();
    if (state.shuttingDown) res.set('Connection', 'close');
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      log.info('request', {
        method: req.method,
        path: req.path,
        status: res.statusCode,
        ms: Math.round(ms * 10) / 10,
      });
    });
    next();
  });

  app.use(express.json({ limit: '100kb' }));
  app.use(maintenance.middleware(() => cfg.MAINTENANCE_FILE));

  // ---------------------------------------------------------------- health
  async function checkDatabase() {
    const t0 = Date.now();
    try {
      const r = await withTimeout(pool.query('SELECT pg_is_in_recovery() AS in_recovery'), cfg.HEALTH_TIMEOUT_MS);
      return { status: 'ok', latency_ms: Date.now() - t0, in_recovery: r.rows[0].in_recovery };
    } catch (err) {
      return { status: 'down', error: log.errorCode(err), message: log.errorInfo(err).message || null, latency_ms: Date.now() - t0 };
    }
  }

  async function checkRedis() {
    const t0 = Date.now();
    try {
      const pong = await withTimeout(redis.ping(), cfg.HEALTH_TIMEOUT_MS);
      if (pong !== 'PONG') throw new Error(`unexpected PING reply`);
      return { status: 'ok', latency_ms: Date.now() - t0 };
    } catch (err) {
      // While disconnected ioredis fails commands with a generic retry error;
      // report the underlying connection error (ECONNREFUSED, WRONGPASS...).
      const generic = err && (err.name === 'MaxRetriesPerRequestError' || /Connection is closed|Stream isn't writeable/.test(err.message || ''));
      const code = generic && redis.lastErrorCode ? redis.lastErrorCode : log.errorCode(err);
      return { status: 'down', error: code, message: log.errorInfo(err).message || null, connection: redis.status, latency_ms: Date.now() - t0 };
    }
  }

  app.get('/api/health', async (req, res) => {
    const [database, redisCheck] = await Promise.all([checkDatabase(), checkRedis()]);
    const body = {
      status: 'ok',
      checks: { database, redis: redisCheck },
      revision,
      pid: process.pid,
      instance: process.env.NODE_APP_INSTANCE !== undefined ? Number(process.env.NODE_APP_INSTANCE) : null,
      uptime_s: Math.round((Date.now() - started) / 1000),
      read_only: maintenance.isMaintenance(cfg.MAINTENANCE_FILE),
      banner: maintenance.readBanner(maintenance.bannerFile(cfg.MAINTENANCE_FILE)),
      jwt_fingerprint: jwtFingerprint,
    };
    let code = 200;
    if (database.status !== 'ok') {
      body.status = 'error';
      body.error = 'Database connection failed';
      code = 503;
    } else if (redisCheck.status !== 'ok') {
      body.status = 'error';
      body.error = 'Cache connection failed';
      code = 503;
    }
    res.status(code).json(body);
  });

  // The users' banner (maintenance.js): shown by the frontend while the on-call runbook sets it.
  app.get('/api/banner', (req, res) => {
    res.json({ banner: maintenance.readBanner(maintenance.bannerFile(cfg.MAINTENANCE_FILE)) });
  });

  // ----------------------------------------------------------------- login
  app.post('/api/login', async (req, res) => {
    const email = typeof req.body?.email === 'string' ? req.body.email.trim().toLowerCase() : '';
    const password = typeof req.body?.password === 'string' ? req.body.password : '';
    if (!email || !password) {
      res.status(400).json({ error: 'email and password are required' });
      return;
    }
    let user;
    try {
      const r = await pool.query('SELECT id, email, password_hash FROM users WHERE email = $1', [email]);
      user = r.rows[0];
    } catch (err) {
      log.error('login: database error', log.errorInfo(err));
      const e = db.httpError(err);
      res.status(e.status).json(e.body);
      return;
    }
    let ok = false;
    try {
      ok = user && user.password_hash ? await bcrypt.compare(password, user.password_hash) : false;
    } catch (err) {
      log.warn('login: unusable password hash', { user_id: String(user.id), ...log.errorInfo(err) });
    }
    if (!ok) {
      authFailure(user ? 'bad_password' : 'unknown_user', { route: 'login' });
      res.status(401).json({ error: 'Invalid credentials' });
      return;
    }
    const sid = crypto.randomUUID();
    const userId = String(user.id);
    const session = JSON.stringify({ user_id: userId, email: user.email, created_at: new Date().toISOString() });
    try {
      const results = await withTimeout(
        redis
          .multi()
          .set(`${SESSION_PREFIX}${sid}`, session, 'EX', cfg.JWT_TTL_S)
          .sadd(`${USER_SESSIONS_PREFIX}${userId}`, sid)
          .exec(),
        3000,
      );
      if (!results) throw new Error('transaction aborted');
      for (const [err] of results) if (err) throw err;
    } catch (err) {
      log.error('login: session store error', log.errorInfo(err));
      // a key of the wrong type where a session belongs: the session store is corrupt
      if (log.errorCode(err) === 'WRONGTYPE') authFailure('session_corrupt', { route: 'login', user_id: userId });
      res.status(503).json({ error: 'Session store error' });
      return;
    }
    const token = jwt.sign({ sub: userId, sid, email: user.email }, cfg.JWT_SECRET, {
      algorithm: 'HS256',
      expiresIn: cfg.JWT_TTL_S,
    });
    res.json({ token, expires_in: cfg.JWT_TTL_S });
  });

  // -------------------------------------------------- manual provider test
  app.post('/api/notifications/test', async (req, res) => {
    const type = req.body?.type;
    const key = `test-${crypto.randomUUID()}`;
    let r;
    if (type === 'sms') {
      const phone = req.body.phone;
      if (typeof phone !== 'string' || !/^\+[1-9]\d{6,14}$/.test(phone)) {
        res.status(400).json({ error: 'phone must be in E.164 format' });
        return;
      }
      r = await providers.sendSms(cfg, { to: phone, body: 'AKIG: test de notification SMS', idempotencyKey: key });
    } else if (type === 'email') {
      const email = req.body.email;
      if (typeof email !== 'string' || !/^[^@\s]+@[^@\s]+$/.test(email)) {
        res.status(400).json({ error: 'email is invalid' });
        return;
      }
      r = await providers.sendEmail(cfg, {
        to: email,
        subject: 'AKIG - test de notification',
        body: 'Ceci est un e-mail de test envoyé par AKIG.',
        idempotencyKey: key,
      });
    } else {
      res.status(400).json({ error: "type must be 'sms' or 'email'" });
      return;
    }
    if (r.ok) {
      res.json({ status: 'sent', provider: r.provider, provider_status: r.provider_status, provider_message_id: r.provider_message_id });
    } else {
      log.warn('notification test failed', { provider: r.provider, provider_status: r.provider_status, error: r.error });
      res.status(502).json({ status: 'failed', provider: r.provider, provider_status: r.provider_status, error: r.error });
    }
  });

  // ------------------------------------------------------------------ auth
  async function requireAuth(req, res, next) {
    const h = req.get('authorization') || '';
    const m = /^Bearer\s+(\S+)$/i.exec(h);
    let claims;
    try {
      if (!m) throw new Error('no bearer token');
      claims = jwt.verify(m[1], cfg.JWT_SECRET, { algorithms: ['HS256'] });
      if (!claims.sid || !claims.sub) throw new Error('missing claims');
    } catch (err) {
      authFailure(tokenFailureClass(err), { route: req.path });
      res.status(401).json({ error: 'Invalid token' });
      return;
    }
    let raw;
    try {
      raw = await withTimeout(redis.get(`${SESSION_PREFIX}${claims.sid}`), 3000);
    } catch (err) {
      log.error('auth: session store error', log.errorInfo(err));
      if (log.errorCode(err) === 'WRONGTYPE') authFailure('session_corrupt', { route: req.path, user_id: String(claims.sub) });
      res.status(503).json({ error: 'Session store error' });
      return;
    }
    if (raw === null || raw === undefined) {
      authFailure('session_missing', { route: req.path, user_id: String(claims.sub) });
      res.status(401).json({ error: 'Session expired' });
      return;
    }
    let session;
    try {
      session = JSON.parse(raw);
    } catch {
      session = null;
    }
    if (!session || typeof session !== 'object' || String(session.user_id) !== String(claims.sub)) {
      log.warn('corrupt session', { sid_prefix: String(claims.sid).slice(0, 8), user_id: String(claims.sub) });
      authFailure('session_corrupt', { route: req.path, user_id: String(claims.sub) });
      res.status(401).json({ error: 'Invalid token' });
      return;
    }
    req.user = { id: String(claims.sub), email: session.email, sid: claims.sid };
    next();
  }

  function dbFail(res, what, err) {
    log.error(`${what}: database error`, log.errorInfo(err));
    const e = db.httpError(err);
    res.status(e.status).json(e.body);
  }

  const CONTRACT_COLS =
    'c.id, c.reference, c.tenant_name, c.property_address, c.rent_cents, c.start_date, c.end_date, c.status';

  async function contractsPage(req) {
    const { page, per_page, offset } = parsePaging(req.query);
    const total = (await pool.query('SELECT count(*)::int AS n FROM contracts')).rows[0].n;
    const items = (
      await pool.query(`SELECT ${CONTRACT_COLS} FROM contracts c ORDER BY c.id LIMIT $1 OFFSET $2`, [per_page, offset])
    ).rows;
    return { page, per_page, total, items };
  }

  app.get('/api/contracts', requireAuth, async (req, res) => {
    try {
      res.json(await contractsPage(req));
    } catch (err) {
      dbFail(res, 'contracts', err);
    }
  });

  // Payments per contract: one query per contract of the page (N+1, kept on
  // purpose — it is the pattern behind AKIG's slow-queries incident; with
  // payments_contract_id_idx each query is an index scan, without it each one
  // is a sequential scan of the whole payments table).
  app.get('/api/payments', requireAuth, async (req, res) => {
    const t0 = Date.now();
    try {
      const cp = await contractsPage(req);
      const items = [];
      for (const c of cp.items) {
        const r = await pool.query(
          'SELECT id, contract_id, amount_cents, due_date, paid_at, status FROM payments WHERE contract_id = $1 ORDER BY due_date',
          [c.id],
        );
        items.push({ contract_id: c.id, reference: c.reference, tenant_name: c.tenant_name, payments: r.rows });
      }
      res.json({ page: cp.page, per_page: cp.per_page, total: cp.total, queries: cp.items.length + 2, db_ms: Date.now() - t0, items });
    } catch (err) {
      dbFail(res, 'payments', err);
    }
  });

  app.post('/api/payments', requireAuth, async (req, res) => {
    const b = req.body || {};
    const contractId = Number(b.contract_id);
    const amount = Number(b.amount_cents);
    const due = b.due_date;
    const errors = [];
    if (!Number.isSafeInteger(contractId) || contractId < 1) errors.push('contract_id must be a positive integer');
    if (!Number.isSafeInteger(amount) || amount < 1 || amount > 2147483647) errors.push('amount_cents must be a positive integer');
    if (typeof due !== 'string' || !/^\d{4}-\d{2}-\d{2}$/.test(due) || Number.isNaN(Date.parse(due))) {
      errors.push('due_date must be YYYY-MM-DD');
    }
    if (errors.length) {
      res.status(400).json({ error: errors.join('; ') });
      return;
    }
    try {
      const r = await pool.query(
        `INSERT INTO payments (contract_id, amount_cents, due_date, status)
         VALUES ($1, $2, $3, 'due')
         RETURNING id, contract_id, amount_cents, due_date, paid_at, status`,
        [contractId, amount, due],
      );
      res.status(201).json(r.rows[0]);
    } catch (err) {
      if (err.code === '23503') {
        res.status(404).json({ error: 'Contract not found' });
        return;
      }
      if (err.code === '22008' || err.code === '22007') {
        res.status(400).json({ error: 'due_date must be YYYY-MM-DD' });
        return;
      }
      dbFail(res, 'create payment', err);
    }
  });

  // ----------------------------------------------------------------- users
  // Account creation (the runbooks' synthetic check creates a throwaway account and deletes it);
  // an account may be deleted only by the user who created it.
  app.post('/api/users', requireAuth, async (req, res) => {
    const b = req.body || {};
    const email = typeof b.email === 'string' ? b.email.trim().toLowerCase() : '';
    const fullName = typeof b.full_name === 'string' ? b.full_name.trim() : '';
    const password = typeof b.password === 'string' ? b.password : '';
    const errors = [];
    if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email) || email.length > 254) errors.push('email is invalid');
    if (!fullName || fullName.length > 200) errors.push('full_name is required (at most 200 characters)');
    if (password.length < 12 || password.length > 72) errors.push('password must be 12 to 72 characters');
    if (errors.length) {
      res.status(400).json({ error: errors.join('; ') });
      return;
    }
    try {
      const hash = await bcrypt.hash(password, 8);
      const r = await pool.query(
        `INSERT INTO users (email, full_name, password_hash, role, created_by)
         VALUES ($1, $2, $3, 'agent', $4)
         RETURNING id, email, full_name, role, created_at`,
        [email, fullName, hash, req.user.id],
      );
      const u = r.rows[0];
      res.status(201).json({ ...u, id: String(u.id) });
    } catch (err) {
      if (err.code === '23505') {
        res.status(409).json({ error: 'An account with this email already exists' });
        return;
      }
      dbFail(res, 'create user', err);
    }
  });

  app.delete('/api/users/:id', requireAuth, async (req, res) => {
    if (!/^[1-9][0-9]{0,18}$/.test(req.params.id)) {
      res.status(404).json({ error: 'User not found' });
      return;
    }
    try {
      const r = await pool.query('DELETE FROM users WHERE id = $1 AND created_by = $2 RETURNING id', [req.params.id, req.user.id]);
      if (r.rowCount === 1) {
        res.status(204).end();
        return;
      }
      const exists = await pool.query('SELECT 1 FROM users WHERE id = $1', [req.params.id]);
      if (exists.rowCount) res.status(403).json({ error: 'You can only delete accounts you created' });
      else res.status(404).json({ error: 'User not found' });
    } catch (err) {
      dbFail(res, 'delete user', err);
    }
  });

  // A real write through the app that touches no business data: an upsert of one row per probe
  // name (the on-call runbooks prove the database takes writes again with it, not with a payment).
  app.post('/api/health/write-probe', requireAuth, async (req, res) => {
    const probe = typeof req.body?.probe === 'string' ? req.body.probe : '';
    if (!/^[a-z0-9][a-z0-9._-]{0,63}$/.test(probe)) {
      res.status(400).json({ error: 'probe must be a name of 1 to 64 characters: a-z, 0-9, ., _ and -' });
      return;
    }
    try {
      const r = await pool.query(
        `INSERT INTO health_write_probe (probe) VALUES ($1)
         ON CONFLICT (probe) DO UPDATE SET written_at = now(), writes = health_write_probe.writes + 1
         RETURNING probe, written_at, writes`,
        [probe],
      );
      res.status(201).json(r.rows[0]);
    } catch (err) {
      dbFail(res, 'write probe', err);
    }
  });

  app.get('/api/contracts/:id/pdf', requireAuth, async (req, res) => {
    const id = Number(req.params.id);
    if (!Number.isSafeInteger(id) || id < 1) {
      res.status(404).json({ error: 'Contract not found' });
      return;
    }
    let c;
    try {
      const r = await pool.query(`SELECT ${CONTRACT_COLS} FROM contracts c WHERE c.id = $1`, [id]);
      c = r.rows[0];
    } catch (err) {
      dbFail(res, 'contract pdf', err);
      return;
    }
    if (!c) {
      res.status(404).json({ error: 'Contract not found' });
      return;
    }
    const pdf = contractPdf(c);
    res
      .status(200)
      .set('Content-Type', 'application/pdf')
      .set('Content-Disposition', `inline; filename="${c.reference}.pdf"`)
      .send(pdf);
  });

  // ------------------------------------------------------------ fallbacks
  app.use('/api', (req, res) => res.status(404).json({ error: 'Not found' }));
  app.use((req, res) => res.status(404).json({ error: 'Not found' }));

  // eslint-disable-next-line no-unused-vars
  app.use((err, req, res, next) => {
    if (err && err.type === 'entity.parse.failed') {
      res.status(400).json({ error: 'Invalid JSON' });
      return;
    }
    if (err && err.type === 'entity.too.large') {
      res.status(413).json({ error: 'Payload too large' });
      return;
    }
    log.error('unhandled route error', log.errorInfo(err));
    if (!res.headersSent) res.status(500).json({ error: 'Internal error' });
  });

  return app;
}

module.exports = { createApp, SESSION_PREFIX, USER_SESSIONS_PREFIX, AUTH_FAILURE_CLASSES, tokenFailureClass };
