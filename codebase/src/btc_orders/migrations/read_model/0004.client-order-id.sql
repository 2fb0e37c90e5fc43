-- The client's own reference for an order (SPEC 3.1), served in each order's document after
-- `idempotence_key`: `null` for an order placed without one.
-- depends: 0003.filters-and-notifications

ALTER TABLE buy_order_view ADD COLUMN client_order_id text;

-- The SQL rendering of a row's document (migration 0002), with the new field: byte for byte what
-- the projector writes with orjson (tests/integration/test_read_model_documents.py compares the
-- two). The trigger of migration 0002 still fills the document of a row inserted without one.
CREATE OR REPLACE FUNCTION buy_order_document(o buy_order_view) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT '{"id":"' || o.id::text
        || '","created_at":"' || to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        || '","currency":' || to_json(o.currency)::text
        || ',"amount":' || to_json(o.amount)::text
        || ',"exchange_rate":' || to_json(o.exchange_rate)::text
        || ',"bitcoin_amount":' || to_json(o.bitcoin_amount)::text
        || ',"idempotence_key":"' || o.idempotence_key::text
        || '","client_order_id":' || coalesce(to_json(o.client_order_id)::text, 'null') || '}'
$$;

-- Every stored document gains `"client_order_id":null` (no order had one before).
UPDATE buy_order_view AS o SET document = buy_order_document(o);
