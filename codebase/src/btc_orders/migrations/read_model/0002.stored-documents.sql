-- Read model shaped for its query: each order's served JSON document, stored at projection time.
-- depends: 0001.create-read-model

-- `read_model_sync` writes the document with orjson from the same resource the API served before
-- (btc_orders.adapters.read_model.document). This function is the same rendering in SQL, byte for
-- byte (tests/integration/test_read_model.py compares the two): it backfills the rows that
-- existed before this migration, and the read queries fall back on it for a row whose document
-- is NULL (a row written by something other than the projector or the admin CLI).
-- Timestamps: RFC 3339 in UTC with microseconds and a `Z`; money: the stored decimal strings.
CREATE FUNCTION buy_order_document(o buy_order_view) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT '{"id":"' || o.id::text
        || '","created_at":"' || to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        || '","currency":' || to_json(o.currency)::text
        || ',"amount":' || to_json(o.amount)::text
        || ',"exchange_rate":' || to_json(o.exchange_rate)::text
        || ',"bitcoin_amount":' || to_json(o.bitcoin_amount)::text
        || ',"idempotence_key":"' || o.idempotence_key::text || '"}'
$$;

ALTER TABLE buy_order_view ADD COLUMN document text;

UPDATE buy_order_view AS o SET document = buy_order_document(o);
