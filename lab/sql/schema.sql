-- AKIG lab schema (idempotent: safe to run again on an existing database).
-- Run as a superuser / the database owner, connected to akig_db:
--   psql -v ON_ERROR_STOP=1 -d akig_db -f lab/sql/schema.sql
-- The role akig_app is created by the lab controller; grants are applied
-- only if it exists.

SET client_min_messages = warning;

CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

CREATE TABLE IF NOT EXISTS users (
    id            bigserial PRIMARY KEY,
    email         text NOT NULL UNIQUE CHECK (email = lower(email)),
    full_name     text NOT NULL,
    password_hash text NOT NULL,
    role          text NOT NULL DEFAULT 'agent',
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- the user who created the account through POST /api/users (NULL for seeded accounts);
    -- DELETE /api/users/:id removes only accounts the caller created
    created_by    bigint REFERENCES users (id) ON DELETE SET NULL
);
ALTER TABLE users ADD COLUMN IF NOT EXISTS created_by bigint REFERENCES users (id) ON DELETE SET NULL;

CREATE TABLE IF NOT EXISTS contracts (
    id               bigserial PRIMARY KEY,
    reference        text NOT NULL UNIQUE,
    tenant_name      text NOT NULL,
    property_address text NOT NULL,
    rent_cents       integer NOT NULL CHECK (rent_cents > 0),
    start_date       date NOT NULL,
    end_date         date,
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'terminated', 'pending'))
);

CREATE TABLE IF NOT EXISTS payments (
    id           bigserial PRIMARY KEY,
    contract_id  bigint NOT NULL REFERENCES contracts (id),
    amount_cents integer NOT NULL CHECK (amount_cents > 0),
    due_date     date NOT NULL,
    paid_at      timestamptz,
    status       text NOT NULL DEFAULT 'due'
                 CHECK (status IN ('due', 'paid', 'late'))
);

-- The index behind GET /api/payments (one query per contract). Dropping it
-- is the lab's slow_queries fault; recreating it is the fix.
CREATE INDEX IF NOT EXISTS payments_contract_id_idx ON payments (contract_id);

CREATE TABLE IF NOT EXISTS notification_queue (
    id                  bigserial PRIMARY KEY,
    channel             text NOT NULL CHECK (channel IN ('sms', 'email')),
    kind                text NOT NULL CHECK (kind IN ('reminder', 'preavis', 'receipt', 'alert')),
    recipient           text NOT NULL,
    subject             text,
    body                text NOT NULL,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'sending', 'sent', 'failed')),
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    idempotency_key     text NOT NULL UNIQUE,
    provider_message_id text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    -- set when the worker claims the row (status 'sending'); rows stuck in
    -- 'sending' for more than 2 minutes are put back to 'pending'.
    locked_at           timestamptz
);
ALTER TABLE notification_queue ADD COLUMN IF NOT EXISTS locked_at timestamptz;

CREATE INDEX IF NOT EXISTS notification_queue_status_next_attempt_idx
    ON notification_queue (status, next_attempt_at);

-- RB-P2-003 (notification outage): channels of the fallback matrix, the replay's claims, préavis
-- deadlines, fallback rows and the recipients' contact points (idempotent; existing rows stay valid).
ALTER TABLE notification_queue ADD COLUMN IF NOT EXISTS claimed_by text;
ALTER TABLE notification_queue ADD COLUMN IF NOT EXISTS due_at timestamptz;
ALTER TABLE notification_queue ADD COLUMN IF NOT EXISTS fallback_of bigint REFERENCES notification_queue (id);
ALTER TABLE notification_queue ADD COLUMN IF NOT EXISTS contacts jsonb NOT NULL DEFAULT '{}';
ALTER TABLE notification_queue DROP CONSTRAINT IF EXISTS notification_queue_channel_check;
ALTER TABLE notification_queue ADD CONSTRAINT notification_queue_channel_check
    CHECK (channel IN ('sms', 'email', 'push', 'dashboard', 'phone_call', 'registered_mail'));
ALTER TABLE notification_queue DROP CONSTRAINT IF EXISTS notification_queue_status_check;
ALTER TABLE notification_queue ADD CONSTRAINT notification_queue_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'rerouted'));
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'notification_queue_fallback_channel_key') THEN
        ALTER TABLE notification_queue ADD CONSTRAINT notification_queue_fallback_channel_key
            UNIQUE (fallback_of, channel);
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS notification_queue_claimed_by_idx
    ON notification_queue (claimed_by) WHERE status = 'sending';

-- The sink of the channels that are neither Twilio nor SendGrid: push and dashboard messages shown by
-- the app, phone-call and registered-mail tasks worked by the AKIG back office. One row per queue row.
CREATE TABLE IF NOT EXISTS notification_tasks (
    id         bigserial PRIMARY KEY,
    queue_id   bigint NOT NULL UNIQUE REFERENCES notification_queue (id),
    channel    text NOT NULL CHECK (channel IN ('push', 'dashboard', 'phone_call', 'registered_mail')),
    recipient  text NOT NULL,
    kind       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    status     text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done'))
);

-- The pause switch per provider: the app worker does not claim rows of a paused provider's channel.
CREATE TABLE IF NOT EXISTS notification_provider_state (
    provider   text PRIMARY KEY CHECK (provider IN ('twilio', 'sendgrid')),
    paused     boolean NOT NULL DEFAULT false,
    reason     text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO notification_provider_state (provider) VALUES ('twilio'), ('sendgrid') ON CONFLICT DO NOTHING;

-- The health write probe: one row per probe name, upserted by POST /api/health/write-probe, so an
-- on-call runbook proves a write through the app without touching business data (no payment).
CREATE TABLE IF NOT EXISTS health_write_probe (
    probe       text PRIMARY KEY,
    written_at  timestamptz NOT NULL DEFAULT now(),
    writes      bigint NOT NULL DEFAULT 1
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'akig_app') THEN
        GRANT USAGE ON SCHEMA public TO akig_app;
        GRANT SELECT, INSERT, UPDATE, DELETE
            ON users, contracts, payments, notification_queue, health_write_probe,
               notification_tasks, notification_provider_state TO akig_app;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO akig_app;
        GRANT pg_read_all_stats TO akig_app;
    ELSE
        RAISE NOTICE 'role akig_app does not exist: grants skipped';
    END IF;
END
$$;
