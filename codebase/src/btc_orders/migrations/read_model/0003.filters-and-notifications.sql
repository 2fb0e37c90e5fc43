-- Filtered keyset pages in constant time, and a notification when orders land.
-- depends: 0002.stored-documents

-- `currency=...`: one range scan of its own index per currency asked for (merged by sequence).
-- Partial indexes, one per currency of SPEC 3.1: smaller than the primary key for the same range,
-- so the planner never prefers the primary key and a filter that skips the other currencies.
CREATE INDEX buy_order_view_eur_sequence ON buy_order_view (sequence) WHERE currency = 'EUR';
CREATE INDEX buy_order_view_gbp_sequence ON buy_order_view (sequence) WHERE currency = 'GBP';
CREATE INDEX buy_order_view_usd_sequence ON buy_order_view (sequence) WHERE currency = 'USD';

-- `created_gte` / `created_lt`: the range is turned into a range of sequences with this index
-- (btc_orders.adapters.read_model explains the bound and proves it exact).
CREATE INDEX buy_order_view_created_at ON buy_order_view (created_at);

-- `created_at` is not monotonic in `sequence`: an order's timestamp is taken when its
-- transaction starts, its sequence a little later. `disorder` is an upper bound of
-- created_at(a) - created_at(b) over every pair of rows with a.sequence < b.sequence (zero when
-- the timestamps are in sequence order). A row with created_at >= T + disorder has only rows with
-- created_at >= T after it; a row with created_at < T - disorder only rows with created_at < T
-- before it: the two bounds the paging query takes from the created_at index.
CREATE TABLE buy_order_view_disorder (
    singleton boolean  PRIMARY KEY DEFAULT true CHECK (singleton),
    disorder  interval NOT NULL CHECK (disorder >= interval '0')
);

INSERT INTO buy_order_view_disorder (disorder)
SELECT coalesce(greatest(max(w.prior - w.created_at), interval '0'), interval '0')
FROM (
    SELECT o.created_at,
           max(o.created_at) OVER (ORDER BY o.sequence ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prior
    FROM buy_order_view AS o
) AS w;

-- After every statement that inserts or updates rows (the projection, the admin's repair): widen
-- `disorder` to cover every pair that involves a changed row. Let `lowest` be the smallest changed
-- sequence. Pairs with both rows at or after `lowest` are covered by the running maximum over those
-- rows in sequence order; a pair whose first row lies before `lowest` is covered by the largest
-- created_at before `lowest` (one row from the created_at index, skipping only rows at or after
-- `lowest`). Pairs of unchanged rows only were covered before. The cost is the rows from `lowest`
-- on: the batch itself when events arrive roughly in order.
--
-- The row lock taken first serialises these statements until commit: in READ COMMITTED every later
-- statement of this function sees each row that a concurrent projection committed before it, so
-- two concurrent batches never miss the pairs between them.
CREATE FUNCTION buy_order_view_track_disorder() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    lowest bigint;
    before_lowest timestamptz;
    seen interval;
BEGIN
    SELECT min(c.sequence) INTO lowest FROM changed AS c;
    IF lowest IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM FROM buy_order_view_disorder FOR UPDATE;
    SELECT o.created_at INTO before_lowest
    FROM buy_order_view AS o
    WHERE o.sequence < lowest
    ORDER BY o.created_at DESC
    LIMIT 1;
    SELECT max(w.prior - w.created_at) INTO seen
    FROM (
        SELECT o.created_at,
               greatest(
                   before_lowest,
                   max(o.created_at) OVER (ORDER BY o.sequence ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
               ) AS prior
        FROM buy_order_view AS o
        WHERE o.sequence >= lowest
    ) AS w;
    UPDATE buy_order_view_disorder SET disorder = seen WHERE seen > disorder;
    RETURN NULL;
END
$$;

CREATE TRIGGER buy_order_view_track_disorder_on_insert
    AFTER INSERT ON buy_order_view
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION buy_order_view_track_disorder();

CREATE TRIGGER buy_order_view_track_disorder_on_update
    AFTER UPDATE ON buy_order_view
    REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION buy_order_view_track_disorder();

-- Read your own write: `GET /buy_orders/{id}` with `Prefer: wait=N` waits for this notification
-- (one LISTEN connection per fetch_buy_orders process), never polls. Once per inserting statement
-- (the projection inserts a batch in one statement): the ids of the new rows, comma-separated, at
-- most 200 per notification (payloads are limited to 8000 bytes); a statement of more than 1000
-- rows (a rebuild) sends '*' instead: every waiter looks once. Delivered at commit, not before.
CREATE FUNCTION buy_order_view_notify_inserted() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF (SELECT count(*) FROM inserted) > 1000 THEN
        PERFORM pg_notify('buy_order_view_inserted', '*');
    ELSE
        PERFORM pg_notify('buy_order_view_inserted', string_agg(chunks.id::text, ','))
        FROM (SELECT i.id, (row_number() OVER () - 1) / 200 AS chunk FROM inserted AS i) AS chunks
        GROUP BY chunks.chunk;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER buy_order_view_notify_inserted
    AFTER INSERT ON buy_order_view
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION buy_order_view_notify_inserted();
