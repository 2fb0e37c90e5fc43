-- Ceiling (b): the naive design. One cap row, moved conditionally, and the order, in one
-- transaction: the row lock is held until commit, so every order waits for the one before.
BEGIN;
UPDATE bench_naive_cap SET used_satoshis = used_satoshis + 127252
WHERE id = 1 AND used_satoshis + 127252 <= cap_satoshis;
INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount, request_id)
VALUES (gen_random_uuid(), gen_random_uuid(), 'USD', 123.45, 97012.34, 0.00127252, 'pgbench');
COMMIT;
