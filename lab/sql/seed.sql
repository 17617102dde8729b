-- AKIG lab seed data. Run once after schema.sql, as a superuser / owner:
--   psql -v ON_ERROR_STOP=1 -v probe_password='...' -d akig_db -f lab/sql/seed.sql
--
-- 2000 users, the probe user probe@akig.example (role oncall, password =
-- :probe_password), the authentication check account auth-check@akig.example (password =
-- :auth_check_password, when given), 5000 contracts, 200000 payments (40 monthly due dates per
-- contract, rows interleaved by month like a real ledger), no notifications.
-- Re-running is harmless: existing rows are kept, only the probe user's
-- password is reset to :probe_password.
\set ON_ERROR_STOP 1
\if :{?probe_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'seed.sql: psql variable probe_password is required (-v probe_password=...)'; END $$;
\endif

BEGIN;

-- Users: bcrypt cost 4 via pgcrypto ($2a$ hashes, verified by bcryptjs).
-- To keep the seed fast the 2000 bulk users share 40 passwords
-- ('akig-lab-<n>' with n = user number mod 40), each hashed once.
WITH pw AS (
    SELECT n, crypt(format('akig-lab-%s', n), gen_salt('bf', 4)) AS hash
      FROM generate_series(0, 39) AS n
)
INSERT INTO users (email, full_name, password_hash, role, created_at)
SELECT format('user%s@akig.example', lpad(g::text, 4, '0')),
       (ARRAY['Camille','Léa','Hugo','Louis','Chloé','Nathan','Inès','Lucas','Manon','Jules'])[1 + g % 10]
         || ' ' ||
       (ARRAY['Martin','Bernard','Dubois','Thomas','Robert','Richard','Petit','Durand','Leroy','Moreau','Simon','Laurent'])[1 + (g / 10) % 12],
       pw.hash,
       CASE WHEN g % 50 = 0 THEN 'admin' WHEN g % 10 = 0 THEN 'manager' ELSE 'agent' END,
       now() - make_interval(days => g % 900)
  FROM generate_series(1, 2000) AS g
  JOIN pw ON pw.n = g % 40
 ORDER BY g
ON CONFLICT (email) DO NOTHING;

INSERT INTO users (email, full_name, password_hash, role)
VALUES ('probe@akig.example', 'Sonde Astreinte', crypt(:'probe_password', gen_salt('bf', 4)), 'oncall')
ON CONFLICT (email) DO UPDATE
   SET password_hash = EXCLUDED.password_hash, role = 'oncall';

-- The authentication check account of RB-P1-002 (synthetic login, token use, account creation),
-- password = :auth_check_password (the lab's generated secret auth_check_password).
\if :{?auth_check_password}
INSERT INTO users (email, full_name, password_hash, role)
VALUES ('auth-check@akig.example', 'Contrôle Authentification', crypt(:'auth_check_password', gen_salt('bf', 4)), 'oncall')
ON CONFLICT (email) DO UPDATE
   SET password_hash = EXCLUDED.password_hash, role = 'oncall';
\endif

-- Contracts: 40-month leases that started within the last ~3 years, so each
-- has paid/late instalments in the past and 'due' ones ahead.
INSERT INTO contracts (reference, tenant_name, property_address, rent_cents, start_date, end_date, status)
SELECT format('AKIG-%s-%s', extract(year FROM current_date - 30 - ((g * 37) % 1180)), lpad(g::text, 6, '0')),
       (ARRAY['Sophie','Thomas','Emma','Antoine','Julie','Nicolas','Sarah','Maxime','Laura','Pierre','Claire','Julien'])[1 + g % 12]
         || ' ' ||
       (ARRAY['Lefebvre','Michel','Garcia','David','Bertrand','Roux','Vincent','Fournier','Morel','Girard','André','Mercier','Dupont','Lambert'])[1 + (g * 5 + g / 12) % 14],
       format('%s %s, %s',
              1 + g % 140,
              (ARRAY['rue de la République','avenue Jean Jaurès','boulevard Voltaire','rue Victor Hugo','place de la Mairie','rue des Lilas','allée des Tilleuls','quai de la Loire'])[1 + g % 8],
              (ARRAY['75011 Paris','69003 Lyon','13005 Marseille','33000 Bordeaux','31000 Toulouse','44000 Nantes','59000 Lille','67000 Strasbourg'])[1 + (g / 8) % 8]),
       45000 + (g * 7919) % 135000,
       current_date - 30 - ((g * 37) % 1180),
       (current_date - 30 - ((g * 37) % 1180) + interval '40 months')::date,
       CASE WHEN g % 17 = 0 THEN 'terminated' WHEN g % 29 = 0 THEN 'pending' ELSE 'active' END
  FROM generate_series(1, 5000) AS g
ON CONFLICT (reference) DO NOTHING;

-- Payments: 40 monthly instalments per contract = 200000 rows, inserted month
-- by month (so one contract's payments are spread over the whole table).
INSERT INTO payments (contract_id, amount_cents, due_date, paid_at, status)
SELECT c.id,
       c.rent_cents,
       d.due_date,
       CASE WHEN d.due_date < current_date AND (c.id + m) % 23 <> 0
            THEN d.due_date + make_interval(days => ((c.id * 13 + m) % 9)::int, hours => 10)
       END,
       CASE WHEN d.due_date >= current_date THEN 'due'
            WHEN (c.id + m) % 23 = 0 THEN 'late'
            ELSE 'paid' END
  FROM generate_series(0, 39) AS m
 CROSS JOIN contracts c
 CROSS JOIN LATERAL (SELECT (c.start_date + make_interval(months => m))::date AS due_date) d
 WHERE c.reference LIKE 'AKIG-%'
   AND NOT EXISTS (SELECT 1 FROM payments)
 ORDER BY m, c.id;

COMMIT;

ANALYZE users;
ANALYZE contracts;
ANALYZE payments;
ANALYZE notification_queue;

SELECT (SELECT count(*) FROM users)              AS users,
       (SELECT count(*) FROM contracts)          AS contracts,
       (SELECT count(*) FROM payments)           AS payments,
       (SELECT count(*) FROM notification_queue) AS notifications;
