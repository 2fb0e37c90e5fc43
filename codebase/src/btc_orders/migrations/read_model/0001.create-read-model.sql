-- Read model: one denormalised table shaped for keyset paging, newest first.
-- depends:

-- Keyed by the write model's insertion sequence: the primary key index serves
-- `WHERE sequence < $ref ORDER BY sequence DESC LIMIT n` as a backward index scan.
-- Money is kept as the exact text the write model published.
CREATE TABLE buy_order_view (
    sequence        bigint      PRIMARY KEY,
    id              uuid        NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL,
    currency        text        NOT NULL,
    amount          text        NOT NULL,
    exchange_rate   text        NOT NULL,
    bitcoin_amount  text        NOT NULL,
    idempotence_key uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now()
);
