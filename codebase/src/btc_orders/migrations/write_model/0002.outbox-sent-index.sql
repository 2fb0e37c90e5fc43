-- Sent outbox rows are pruned after OUTBOX_RETENTION_SECONDS (the relay, in small batches):
-- this partial index finds the oldest sent rows without scanning the ones still to send or
-- the whole table. Built CONCURRENTLY, outside a transaction, so that a large outbox of an
-- existing deployment keeps taking orders while it is built.
-- depends: 0001.create-write-model
-- transactional: false

CREATE INDEX CONCURRENTLY IF NOT EXISTS outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
