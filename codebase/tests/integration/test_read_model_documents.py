"""The read model stores each order's served JSON document (migrations 0002, 0004): byte for byte
what the API serves, whoever wrote the row (projector, SQL backfill, admin repair)."""

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import orjson
import psycopg_pool
import pytest
from sqlalchemy import Engine, text
from yoyo import read_migrations

from btc_orders.adapters import db
from btc_orders.adapters.projection import apply_created_events, document
from btc_orders.adapters.read_model import PageQuery, ReadModel
from btc_orders.admin.reconcile import reconcile
from btc_orders.domain.orders import format_timestamp
from btc_orders.services.migration.__main__ import backend
from tests.support.services import Databases, opened_pool, throwaway_databases

# The columns of migration 0001 (written by hand: rows from before the later migrations), and today's.
_COLUMNS_0001 = "sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount, idempotence_key"
_COLUMNS = f"{_COLUMNS_0001}, client_order_id"


def served(row: Any) -> dict[str, Any]:
    """The order resource exactly as `fetch_buy_orders` built it from a row before migration 0002,
    with `client_order_id` (SPEC 3.3: null for an order placed without one) after the key."""
    return {
        "id": str(row.id),
        "created_at": format_timestamp(row.created_at),
        "currency": row.currency,
        "amount": row.amount,
        "exchange_rate": row.exchange_rate,
        "bitcoin_amount": row.bitcoin_amount,
        "idempotence_key": str(row.idempotence_key),
        "client_order_id": row._mapping.get("client_order_id"),
    }


# Printable ASCII (SPEC 3.1), JSON's escapes among it, the longest, and none.
CLIENT_ORDER_IDS = [None, "shop-42/A", ' "q" \\ /</script>&', "~" * 64, "".join(chr(c) for c in range(0x20, 0x60))]


def orders() -> list[dict[str, Any]]:
    """Awkward but valid values, and text that only JSON escaping tells apart."""
    moments = [
        datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
        datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-8))),
        datetime(2026, 3, 29, 1, 30, 0, 500000, tzinfo=UTC),
    ]
    money = [
        ("USD", "10.00", "97012.34", "0.00010309"),
        ("EUR", "999999999.99", "0.00000001", "99999999999999999.00000000"),
        ("GBP", "0.01", "123456789012345678901234567890.123456789", "0.00000001"),
        ("USD", "1", "5", "0.2"),
        ('U"S\\D', "1\n0\t\u0001\u001f\u007f", "é€😀/</script>", "\b\f\r"),
    ]
    return [
        {
            "sequence": sequence,
            "id": uuid.uuid4(),
            "created_at": moments[sequence % len(moments)],
            "currency": money[sequence % len(money)][0],
            "amount": money[sequence % len(money)][1],
            "exchange_rate": money[sequence % len(money)][2],
            "bitcoin_amount": money[sequence % len(money)][3],
            "idempotence_key": uuid.uuid4(),
            "client_order_id": CLIENT_ORDER_IDS[sequence % 3 + sequence % 2 * 2],
            "event_id": uuid.uuid4(),
        }
        for sequence in range(1, 26)
    ]


def stored(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                text(
                    f"SELECT {_COLUMNS}, document, buy_order_document(o) AS sql_document"
                    " FROM buy_order_view AS o ORDER BY sequence DESC"
                )
            )
        )


def test_the_projected_document_is_what_the_api_served_and_the_sql_rendering_agrees(read_engine: Engine) -> None:
    with read_engine.begin() as connection:
        apply_created_events(connection, orders())
    rows = stored(read_engine)
    assert len(rows) == 25
    for row in rows:
        expected = orjson.dumps(served(row)).decode()
        assert row.document == expected
        assert row.sql_document == expected
        assert document(row._mapping) == expected


@pytest.fixture
def at_0001() -> Iterator[Databases]:
    """Databases with the read model at migration 0001 only (before stored documents)."""
    with throwaway_databases(migrated=False) as databases:
        migrations = read_migrations(str(db.migrations_dir("read_model")))
        with backend(databases.read_url) as connected, connected.lock():
            connected.apply_migrations(connected.to_apply(migrations.filter(lambda m: m.id.startswith("0001."))))
        yield databases


def test_migrations_0002_and_0004_render_every_existing_row_byte_for_byte(at_0001: Databases) -> None:
    engine = db.create_engine(at_0001.read_url, 2)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    f"INSERT INTO buy_order_view ({_COLUMNS_0001}, event_id) VALUES (:sequence, :id, :created_at,"
                    " :currency, :amount, :exchange_rate, :bitcoin_amount, :idempotence_key, :event_id)"
                ),
                orders(),
            )
            before = {
                row.sequence: orjson.dumps(served(row))
                for row in connection.execute(text(f"SELECT {_COLUMNS_0001} FROM buy_order_view"))
            }
        with backend(at_0001.read_url) as connected, connected.lock():
            connected.apply_migrations(connected.to_apply(read_migrations(str(db.migrations_dir("read_model")))))
        rows = stored(engine)
        assert {row.sequence: row.document.encode() for row in rows} == before
        assert all(row.sql_document == row.document for row in rows)
        assert all(row.document.endswith(',"client_order_id":null}') for row in rows)
    finally:
        engine.dispose()


@pytest.fixture
def at_0003() -> Iterator[Databases]:
    """Databases with the read model at migration 0003 (stored documents, before `client_order_id`)."""
    with throwaway_databases(migrated=False) as databases:
        migrations = read_migrations(str(db.migrations_dir("read_model")))
        with backend(databases.read_url) as connected, connected.lock():
            connected.apply_migrations(connected.to_apply(migrations.filter(lambda m: m.id < "0004.")))
        yield databases


def test_migration_0004_re_renders_the_documents_an_older_projector_stored(at_0003: Databases) -> None:
    engine = db.create_engine(at_0003.read_url, 2)
    try:
        events = orders()
        with engine.begin() as connection:
            # as the projector before `client_order_id` wrote them: its document had no such key
            connection.execute(
                text(
                    f"INSERT INTO buy_order_view ({_COLUMNS_0001}, event_id, document) VALUES (:sequence, :id,"
                    " :created_at, :currency, :amount, :exchange_rate, :bitcoin_amount, :idempotence_key, :event_id,"
                    " :document)"
                ),
                [{**event, "document": old_document(event)} for event in events],
            )
            assert (
                "client_order_id"
                not in connection.execute(text("SELECT document FROM buy_order_view LIMIT 1")).scalar_one()
            )
        with backend(at_0003.read_url) as connected, connected.lock():
            connected.apply_migrations(connected.to_apply(read_migrations(str(db.migrations_dir("read_model")))))
        rows = stored(engine)
        assert len(rows) == len(events)
        for row in rows:
            assert row.document == row.sql_document == orjson.dumps(served(row)).decode()
            assert row.document.endswith(',"client_order_id":null}')
    finally:
        engine.dispose()


def old_document(event: dict[str, Any]) -> str:
    """The document a projector from before `client_order_id` stored for an event: no such key."""
    resource = served(SimpleNamespace(**event, _mapping=event))
    return orjson.dumps({name: value for name, value in resource.items() if name != "client_order_id"}).decode()


def old_page(rows: list[Any], page_size: int) -> bytes:
    """`GET /buy_orders` as it was encoded before: `web.json_response` of the page's resources (the body
    gained `first_reference` with paging both ways, SPEC 3.2)."""
    page = [served(row) for row in rows[:page_size]]
    body = {
        "buy_orders": page,
        "first_reference": page[0]["id"] if page else None,
        "last_reference": page[-1]["id"] if page else None,
        "has_more": len(rows) > page_size,
    }
    return orjson.dumps(body)


@pytest.fixture
async def read_pool(databases: Databases) -> AsyncIterator[psycopg_pool.AsyncConnectionPool]:
    async with opened_pool(databases.read_url, 2) as pool:
        yield pool


async def page_body(model: ReadModel, page_size: int, last_reference: uuid.UUID | None) -> bytes:
    return (await model.fetch_page(PageQuery(page_size, last_reference))).body


@pytest.mark.anyio
@pytest.mark.parametrize("page_size", [1, 3, 10, 24, 25, 26, 1000])
async def test_pages_and_orders_are_the_bytes_served_before_whether_projected_or_inserted_in_sql(
    read_engine: Engine, read_pool: psycopg_pool.AsyncConnectionPool, page_size: int
) -> None:
    events = orders()
    with read_engine.begin() as connection:
        apply_created_events(connection, events[::2])
        # rows written by bulk SQL without a document get the SQL rendering (a trigger)
        connection.execute(
            text(
                f"INSERT INTO buy_order_view ({_COLUMNS}, event_id) VALUES (:sequence, :id, :created_at,"
                " :currency, :amount, :exchange_rate, :bitcoin_amount, :idempotence_key, :client_order_id, :event_id)"
            ),
            events[1::2],
        )
    rows = stored(read_engine)
    assert all(row.document == row.sql_document for row in rows)
    model = ReadModel(read_pool)
    reference: uuid.UUID | None = None
    position = 0
    while True:
        body = await page_body(model, page_size, reference)
        assert body == old_page(rows[position:], page_size)
        page = orjson.loads(body)
        position += page_size
        if not page["has_more"]:
            break
        reference = uuid.UUID(page["last_reference"])
    oldest = uuid.UUID(str(rows[-1].id))
    assert (
        await page_body(model, page_size, oldest)
        == b'{"buy_orders":[],"first_reference":null,"last_reference":null,"has_more":false}'
    )
    for row in rows:
        assert await model.one_body(row.id) == orjson.dumps(served(row))


@pytest.mark.anyio
async def test_an_empty_read_model_serves_an_empty_page(read_pool: psycopg_pool.AsyncConnectionPool) -> None:
    assert (
        await page_body(ReadModel(read_pool), 10, None)
        == b'{"buy_orders":[],"first_reference":null,"last_reference":null,"has_more":false}'
    )


def test_reconcile_finds_a_stale_document_and_repair_rewrites_it(write_engine: Engine, read_engine: Engine) -> None:
    with write_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount)"
                " SELECT gen_random_uuid(), gen_random_uuid(), 'USD', s * 1.01, 97012.34, 0.00001 + s * 0.00000001"
                " FROM generate_series(1, 20) AS s"
            )
        )
    assert reconcile(write_engine, read_engine, repair=True).repaired == 20
    with read_engine.begin() as connection:
        connection.execute(
            text("UPDATE buy_order_view SET document = replace(document, 'USD', 'EUR') WHERE sequence = 5")
        )
    with read_engine.begin() as connection:  # as an old projector wrote it during a rollout: no client_order_id
        connection.execute(
            text("UPDATE buy_order_view SET document = replace(document, :new_key, '}') WHERE sequence = 7"),
            {"new_key": ',"client_order_id":null}'},
        )
    found = reconcile(write_engine, read_engine, repair=False)
    assert found.differing == [5, 7]
    assert reconcile(write_engine, read_engine, repair=True).repaired == 2
    assert reconcile(write_engine, read_engine, repair=False).clean
    for row in stored(read_engine):
        assert row.sql_document == row.document == orjson.dumps(served(row)).decode()
