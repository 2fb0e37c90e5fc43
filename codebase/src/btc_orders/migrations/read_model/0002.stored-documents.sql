-- Read model shaped for its query: each order's served JSON document, stored with the row.
-- depends: 0001.create-read-model

-- `read_model_sync` (and the admin CLI's repair) write the document with orjson from the same
-- resource the API served before (btc_orders.adapters.read_model.document). This function is
-- the same rendering in SQL, byte for byte (tests/integration/test_read_model_documents.py
-- compares the two): it backfills the rows that existed before this migration, and fills the
-- document of a row inserted without one (bulk SQL), so that every row has its document and
-- the read queries read that column alone.
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

ALTER TABLE buy_order_view ALTER COLUMN document SET NOT NULL;

-- Only for a row inserted without its document (the projector always sends one).
CREATE FUNCTION buy_order_view_fill_document() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.document := buy_order_document(NEW);
    RETURN NEW;
END
$$;

CREATE TRIGGER buy_order_view_fill_document
    BEFORE INSERT ON buy_order_view
    FOR EACH ROW WHEN (NEW.document IS NULL)
    EXECUTE FUNCTION buy_order_view_fill_document();
