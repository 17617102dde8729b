'use strict';
// notification_queue data access for the worker.
//
// Delivery semantics: a batch is claimed in a short transaction
// (SELECT ... FOR UPDATE SKIP LOCKED, then status='sending', locked_at=now())
// and committed BEFORE calling the provider, so that no database transaction
// is held open across network calls and two workers never claim the same
// row. If the worker dies between the provider call and the result update,
// the row stays in 'sending'; rows stuck there for more than 2 minutes are
// put back to 'pending' (at worker start and periodically) and sent again.
// That is at-least-once at the provider boundary; the Idempotency-Key header
// (row.idempotency_key, unique per notification) lets the provider drop the
// duplicate, so the result is exactly-once as seen by the recipient.
//
// The pause switch: a row of notification_provider_state with paused = true
// (set by the on-call runbook RB-P2-003 while a provider fails) stops the
// worker from claiming the rows of that provider's channel; they wait in
// 'pending' instead of burning retries. Rows claimed by a replay
// (claimed_by 'replay:<run id>') belong to that replay: resetStuck never
// touches them, the replay reconciles its own ambiguous rows against the
// provider's log.
const { backoffSeconds } = require('./backoff');

const STUCK_AFTER = '2 minutes';
// The channels the worker delivers, and the provider behind each one. Other
// channels (push, dashboard, phone_call, registered_mail) are fallback sinks
// written by the replay, never claimed here.
const PROVIDER_OF_CHANNEL = Object.freeze({ sms: 'twilio', email: 'sendgrid' });

// The channels the worker may claim while `paused` providers are paused. Pure (unit-tested).
function claimableChannels(paused) {
  const off = new Set(paused || []);
  return Object.keys(PROVIDER_OF_CHANNEL).filter((ch) => !off.has(PROVIDER_OF_CHANNEL[ch]));
}

// The providers paused now (one indexed read of a table of two rows, every tick). A database
// without the table (schema older than the switch) pauses nothing.
async function pausedProviders(pool) {
  try {
    const r = await pool.query('SELECT provider FROM notification_provider_state WHERE paused ORDER BY provider');
    return r.rows.map((x) => x.provider);
  } catch (err) {
    if (err && err.code === '42P01') return [];
    throw err;
  }
}

async function resetStuck(pool) {
  const r = await pool.query(
    `UPDATE notification_queue
        SET status = 'pending', locked_at = NULL, next_attempt_at = now(),
            last_error = 'reset: stuck in sending since ' || to_char(locked_at, 'YYYY-MM-DD"T"HH24:MI:SSOF')
      WHERE status = 'sending' AND (locked_at IS NULL OR locked_at < now() - interval '${STUCK_AFTER}')
        AND (claimed_by IS NULL OR claimed_by NOT LIKE 'replay:%')
      RETURNING id`,
  );
  return r.rowCount;
}

// Claim up to `limit` due rows of `channels` (default: every channel the worker delivers).
async function claimBatch(pool, limit, channels = Object.keys(PROVIDER_OF_CHANNEL)) {
  if (!channels.length) return [];
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const r = await client.query(
      `SELECT id, channel, kind, recipient, subject, body, attempts, idempotency_key
         FROM notification_queue
        WHERE status = 'pending' AND next_attempt_at <= now() AND channel = ANY($2::text[])
        ORDER BY id
        FOR UPDATE SKIP LOCKED
        LIMIT $1`,
      [limit, channels],
    );
    if (r.rows.length) {
      await client.query(
        `UPDATE notification_queue SET status = 'sending', locked_at = now(), claimed_by = NULL
          WHERE id = ANY($1::bigint[])`,
        [r.rows.map((x) => x.id)],
      );
    }
    await client.query('COMMIT');
    return r.rows;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

// Give claimed rows that were never sent back to the queue (worker shutdown): pending again,
// same due time, no attempt counted. Only rows still in 'sending' by the worker are touched.
async function release(pool, ids) {
  if (!ids.length) return 0;
  const r = await pool.query(
    `UPDATE notification_queue SET status = 'pending', locked_at = NULL
      WHERE id = ANY($1::bigint[]) AND status = 'sending' AND claimed_by IS NULL`,
    [ids],
  );
  return r.rowCount;
}

// Compute the update for one send result. Pure (unit-tested).
//   ok                -> sent
//   failure           -> attempts+1, last_error, pending with backoff
//   failure, attempts+1 >= maxAttempts -> failed
function outcome(row, res, maxAttempts) {
  const attempts = (Number(row.attempts) || 0) + 1;
  if (res.ok) {
    return { id: row.id, status: 'sent', attempts, provider_message_id: res.provider_message_id || null, last_error: null, delay_s: 0 };
  }
  const err = String(res.error || 'unknown error').slice(0, 300);
  if (attempts >= maxAttempts) {
    return { id: row.id, status: 'failed', attempts, provider_message_id: null, last_error: err, delay_s: 0 };
  }
  return {
    id: row.id,
    status: 'pending',
    attempts,
    provider_message_id: null,
    last_error: err,
    delay_s: backoffSeconds(attempts, res.retry_after),
  };
}

async function applyOutcome(pool, o) {
  if (o.status === 'sent') {
    await pool.query(
      `UPDATE notification_queue
          SET status = 'sent', sent_at = now(), attempts = $2, provider_message_id = $3,
              last_error = NULL, locked_at = NULL
        WHERE id = $1 AND status = 'sending' AND claimed_by IS NULL`,
      [o.id, o.attempts, o.provider_message_id],
    );
  } else {
    await pool.query(
      `UPDATE notification_queue
          SET status = $2, attempts = $3, last_error = $4, locked_at = NULL,
              next_attempt_at = now() + make_interval(secs => $5)
        WHERE id = $1 AND status = 'sending' AND claimed_by IS NULL`,
      [o.id, o.status, o.attempts, o.last_error, o.delay_s],
    );
  }
}

module.exports = {
  resetStuck,
  claimBatch,
  release,
  outcome,
  applyOutcome,
  pausedProviders,
  claimableChannels,
  PROVIDER_OF_CHANNEL,
  STUCK_AFTER,
};
