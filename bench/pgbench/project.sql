-- Ceiling (a): the project's own write, as btc_orders.adapters.write_model runs it on its fast
-- path: ONE statement in autocommit (look the key up; take the order's BTC from one of 16 random
-- cap slots if it holds enough; insert the order from that; insert the outbox row from the order,
-- without a payload: the relay renders the event). Keep in step with _PLACE_IN_ONE_STATEMENT.
\set slot random(0, 15)
WITH k AS (
    SELECT sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount, idempotence_key
    FROM buy_order WHERE idempotence_key = 'e7c4a5a2-5a3e-4f0b-9a59-3f3f0f2b1c01'
), s AS (
    UPDATE cap_slot SET remaining_satoshis = remaining_satoshis - 127252
    WHERE slot = :slot AND remaining_satoshis >= 127252 AND NOT EXISTS (SELECT FROM k)
    RETURNING slot
), o AS (
    INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount, request_id)
    SELECT gen_random_uuid(), gen_random_uuid(), 'USD', 123.45, 97012.34, 0.00127252, 'pgbench'
    FROM s
    RETURNING sequence, created_at
), e AS (
    INSERT INTO outbox (event_id, order_sequence, routing_key, request_id)
    SELECT gen_random_uuid(), o.sequence, 'buy_order.created', 'pgbench'
    FROM o
)
SELECT o.sequence, o.created_at, k.sequence AS replayed_sequence
FROM (SELECT) AS one LEFT JOIN o ON true LEFT JOIN k ON true;
