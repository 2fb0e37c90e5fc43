-- The client's own reference for an order (SPEC 3.1): optional, printable ASCII, 1 to 64 characters.
-- depends: 0003.outbox-payload-rendered-by-relay

-- A nullable column without a default: a change of the catalogue only (no table rewrite, no scan),
-- a brief lock of the table; orders stored before have none (NULL). The CHECK is the API's own
-- rule, so a value the code accepts is never refused here; it names the column as every CHECK
-- of `buy_order` does (`buy_order_<column>_check`), which is how a refusal is told apart.
ALTER TABLE buy_order ADD COLUMN client_order_id text
    CONSTRAINT buy_order_client_order_id_check CHECK (client_order_id ~ '^[ -~]{1,64}$');
