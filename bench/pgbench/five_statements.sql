-- The project's write BEFORE the one-statement tuning (five round trips: BEGIN, insert the order
-- with ON CONFLICT on the key and RETURNING, take its BTC from one of 16 random cap slots, write
-- the outbox row with an event-sized payload, COMMIT). Kept to show what the tuning bought;
-- ceiling (a) is project.sql, the statement the service runs now.
\set slot random(0, 15)
BEGIN;
INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount, request_id)
VALUES (gen_random_uuid(), gen_random_uuid(), 'USD', 123.45, 97012.34, 0.00127252, 'pgbench')
ON CONFLICT (idempotence_key) DO NOTHING
RETURNING sequence AS seq, created_at \gset
UPDATE cap_slot SET remaining_satoshis = remaining_satoshis - 127252
WHERE slot = :slot AND remaining_satoshis >= 127252;
INSERT INTO outbox (event_id, order_sequence, routing_key, payload, request_id)
VALUES (gen_random_uuid(), :seq, 'buy_order.created', '{"event_id":"2f1c6a56-8a8e-4c55-9a1e-0d7f4f0a9a11","type":"buy_order.created","version":1,"occurred_at":"2026-11-25T10:11:45.231652Z","request_id":"pgbench-request-id-000000000000","order":{"id":"7a0b0a3e-4b1c-4f1e-9e62-3c0c4c7a3f10","created_at":"2026-11-25T10:11:45.231652Z","currency":"USD","amount":"123.45","exchange_rate":"97012.34","bitcoin_amount":"0.00127252","idempotence_key":"5fa733ae-82b4-4ac0-8478-35ff30dae879","sequence":1}}', 'pgbench');
COMMIT;
