-- Write model: the source of truth. Orders, the cap ledger and the outbox.
-- depends:

-- Orders are append-only: the trigger below refuses UPDATE and DELETE.
-- `sequence` is the insertion order that the read model pages by.
CREATE TABLE buy_order (
    sequence        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              uuid          NOT NULL UNIQUE,
    idempotence_key uuid          NOT NULL UNIQUE,
    created_at      timestamptz   NOT NULL DEFAULT now(),
    currency        text          NOT NULL CHECK (currency IN ('EUR', 'GBP', 'USD')),
    amount          numeric(11,2) NOT NULL CHECK (amount > 0 AND amount < 1000000000),
    -- Unconstrained numeric keeps the rate exactly as Coinbase wrote it, scale included.
    exchange_rate   numeric       NOT NULL CHECK (exchange_rate > 0),
    bitcoin_amount  numeric(30,8) NOT NULL CHECK (bitcoin_amount >= 0.00000001),
    request_id      text
);

CREATE FUNCTION buy_order_is_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'buy orders are never updated or deleted';
END
$$;

CREATE TRIGGER buy_order_is_immutable
BEFORE UPDATE OR DELETE ON buy_order
FOR EACH ROW EXECUTE FUNCTION buy_order_is_immutable();

-- The configured cap, one row. Changed only by `ensure_cap` at service start.
CREATE TABLE cap_ledger (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    cap_satoshis bigint  NOT NULL CHECK (cap_satoshis >= 0)
);

-- The capacity still available, split across slots so that orders do not all
-- lock one row. Sum of slots = cap - sum(buy_order.bitcoin_amount), floored at 0.
CREATE TABLE cap_slot (
    slot               smallint PRIMARY KEY,
    remaining_satoshis bigint   NOT NULL CHECK (remaining_satoshis >= 0)
);

-- Transactional outbox: written with its order, published by the relay,
-- marked sent only after the broker confirmed it.
CREATE TABLE outbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid        NOT NULL,
    order_sequence bigint      NOT NULL REFERENCES buy_order (sequence),
    routing_key    text        NOT NULL,
    payload        text        NOT NULL,
    request_id     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz
);

CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
