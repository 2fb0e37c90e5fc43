-- The outbox row no longer stores the event's text: the relay renders it from the row's order
-- (orders are immutable, so it is the same text every time; btc_orders.adapters.outbox). Rows
-- written before, with their payload, are published as stored. A change of the catalogue only
-- (no table rewrite, no scan): a brief lock of the outbox table.
-- depends: 0002.outbox-sent-index

ALTER TABLE outbox ALTER COLUMN payload DROP NOT NULL;
