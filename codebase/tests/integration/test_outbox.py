"""The outbox (adapters/outbox.py): rows hold no payload, the claim renders the event from the order,
and a row written with its payload before write-model migration 0003 is published as it was stored."""

from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text
from yoyo import read_migrations

from btc_orders.adapters import db, outbox
from btc_orders.adapters.order_rows import ORDER_COLUMNS, order_from_row
from btc_orders.events import created_event
from btc_orders.services.migration.__main__ import backend
from tests.support.services import Databases, throwaway_databases
from tests.support.workers import store_orders


def place(engine: Engine, request_id: str | None = None) -> None:
    store_orders(engine, 1, "GBP", Decimal("7.50"), Decimal("81234.5600"), [request_id])


def test_a_row_with_a_stored_payload_is_published_as_stored_and_one_without_is_rendered(write_engine: Engine) -> None:
    place(write_engine, "req-a")
    place(write_engine, "req-b")
    with write_engine.begin() as connection:
        connection.execute(text("UPDATE outbox SET payload = '{\"as\":\"stored\"}' WHERE request_id = 'req-a'"))
    with write_engine.begin() as connection:
        first, second = outbox.claim(connection, 10)
        order = connection.execute(text("SELECT * FROM buy_order WHERE request_id = 'req-b'")).one()
    assert first.payload == '{"as":"stored"}'
    assert second.payload.startswith(f'{{"event_id":"{second.event_id}","type":"buy_order.created"')
    assert f'"request_id":"req-b","order":{{"id":"{order.id}"' in second.payload
    assert (first.request_id, second.request_id) == ("req-a", "req-b")


def test_claimed_rows_are_skipped_by_another_claim_and_sent_rows_are_not_claimed(write_engine: Engine) -> None:
    for _ in range(3):
        place(write_engine)
    with write_engine.begin() as holder:
        held = outbox.claim(holder, 2)
        with write_engine.begin() as other:
            assert [row.id for row in outbox.claim(other, 10)] == [max(row.id for row in held) + 1]
        outbox.mark_sent(holder, [row.id for row in held])
    with write_engine.begin() as connection:
        assert len(outbox.claim(connection, 10)) == 1
        assert outbox.backlog(connection).unsent == 1
        assert outbox.backlog(connection).max_sequence == 3


@pytest.fixture
def at_0002() -> Iterator[Databases]:
    """Databases with the write model at migration 0002 (outbox rows stored their payload)."""
    with throwaway_databases(migrated=False) as databases:
        migrating = backend(databases.write_url)
        migrations = read_migrations(str(db.migrations_dir("write_model")))
        with migrating, migrating.lock():
            migrating.apply_migrations(migrating.to_apply(migrations.filter(lambda m: m.id[:4] in {"0001", "0002"})))
        yield databases


def test_migration_0003_keeps_every_unsent_event_as_it_was_stored(at_0002: Databases) -> None:
    engine = db.create_engine(at_0002.write_url, 2)
    try:
        with engine.begin() as connection:
            order = connection.execute(
                text(
                    "INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount)"
                    " VALUES (gen_random_uuid(), gen_random_uuid(), 'EUR', 10.50, 97012.340, 0.00010824)"
                    " RETURNING sequence"
                )
            ).one()
            connection.execute(
                text(
                    "INSERT INTO outbox (event_id, order_sequence, routing_key, payload, request_id)"
                    " VALUES (gen_random_uuid(), :sequence, 'buy_order.created', :payload, 'old')"
                ),
                {"sequence": order.sequence, "payload": '{"written":"by 0002"}'},
            )
        with backend(at_0002.write_url) as migrating, migrating.lock():
            migrating.apply_migrations(migrating.to_apply(read_migrations(str(db.migrations_dir("write_model")))))
        db.check_schema(at_0002.write_url, "write_model")
        place(engine, "new")
        with engine.begin() as connection:
            old, new = outbox.claim(connection, 10)
            stored = order_from_row(
                connection.execute(text(f"SELECT {ORDER_COLUMNS} FROM buy_order WHERE request_id = 'new'")).one()
            )
        assert old.payload == '{"written":"by 0002"}'
        assert new.payload == created_event(stored, new.event_id, "new")
    finally:
        engine.dispose()
