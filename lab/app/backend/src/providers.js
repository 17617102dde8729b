'use strict';
// Outbound notification providers (Twilio-compatible SMS, SendGrid-compatible
// e-mail). Node 20 global fetch, 5 s timeout. Results never contain secrets.
const log = require('./log');

const SEND_TIMEOUT_MS = 5000;

function result(provider, res, body, messageId) {
  const ok = res.status >= 200 && res.status < 300;
  const out = {
    ok,
    provider,
    provider_status: res.status,
    provider_message_id: ok ? messageId || null : null,
    retry_after: res.headers.get('retry-after'),
  };
  if (!ok) out.error = providerErrorText(res.status, body);
  return out;
}

function providerErrorText(status, body) {
  let detail = '';
  if (body) {
    try {
      const j = JSON.parse(body);
      detail = j.message || (j.errors && j.errors[0] && j.errors[0].message) || j.error || '';
    } catch {
      detail = body;
    }
  }
  detail = String(detail).replace(/\s+/g, ' ').trim().slice(0, 120);
  return log.redact(`HTTP ${status}${detail ? `: ${detail}` : ''}`);
}

function networkFailure(provider, err) {
  const code = err && (err.name === 'TimeoutError' || err.name === 'AbortError') ? 'timeout' : log.errorCode(err);
  return {
    ok: false,
    provider,
    provider_status: null,
    provider_message_id: null,
    retry_after: null,
    error: log.redact(`network error: ${code}`),
  };
}

async function sendSms(cfg, { to, body, idempotencyKey }) {
  const url = `${cfg.TWILIO_BASE_URL}/2010-04-01/Accounts/${encodeURIComponent(cfg.TWILIO_ACCOUNT_SID)}/Messages.json`;
  const auth = Buffer.from(`${cfg.TWILIO_ACCOUNT_SID}:${cfg.TWILIO_AUTH_TOKEN}`).toString('base64');
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: {
        Authorization: `Basic ${auth}`,
        'Content-Type': 'application/x-www-form-urlencoded',
        'Idempotency-Key': idempotencyKey,
        Accept: 'application/json',
      },
      body: new URLSearchParams({ To: to, From: cfg.TWILIO_FROM, Body: body || '' }).toString(),
      signal: AbortSignal.timeout(SEND_TIMEOUT_MS),
    });
    const text = await res.text();
    let sid = null;
    try {
      sid = JSON.parse(text).sid || null;
    } catch {
      /* non-JSON body */
    }
    return result('twilio', res, text, sid);
  } catch (err) {
    return networkFailure('twilio', err);
  }
}

async function sendEmail(cfg, { to, subject, body, idempotencyKey }) {
  const url = `${cfg.SENDGRID_BASE_URL}/v3/mail/send`;
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: {
        Authorization: `Bearer ${cfg.SENDGRID_API_KEY}`,
        'Content-Type': 'application/json',
        'Idempotency-Key': idempotencyKey,
      },
      body: JSON.stringify({
        personalizations: [{ to: [{ email: to }] }],
        from: { email: cfg.SENDGRID_FROM },
        subject: subject || 'AKIG',
        content: [{ type: 'text/plain', value: body || '' }],
      }),
      signal: AbortSignal.timeout(SEND_TIMEOUT_MS),
    });
    const text = await res.text();
    return result('sendgrid', res, text, res.headers.get('x-message-id'));
  } catch (err) {
    return networkFailure('sendgrid', err);
  }
}

function send(cfg, row) {
  if (row.channel === 'sms') {
    return sendSms(cfg, { to: row.recipient, body: row.body, idempotencyKey: row.idempotency_key });
  }
  if (row.channel === 'email') {
    return sendEmail(cfg, {
      to: row.recipient,
      subject: row.subject,
      body: row.body,
      idempotencyKey: row.idempotency_key,
    });
  }
  return Promise.resolve({
    ok: false,
    provider: null,
    provider_status: null,
    provider_message_id: null,
    retry_after: null,
    error: `unknown channel ${row.channel}`,
  });
}

module.exports = { sendSms, sendEmail, send, providerErrorText, SEND_TIMEOUT_MS };
