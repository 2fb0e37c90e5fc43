"""The read model on a real Postgres: idempotent projection and constant-cost keyset pages."""

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, text

from btc_orders.adapters import read_model
from btc_orders.adapters.read_model import ReadModel, apply_created_events
from btc_orders.domain.errors import UnknownReference

ROWS = 100_000


def event_row(sequence: int) -> dict[str, Any]:
    return {
        "sequence": sequence,
        "id": uuid.uuid4(),
        "created_at": datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
        "currency": "USD",
        "amount": "10.00",
        "exchange_rate": "97012.34",
        "bitcoin_amount": "0.00010309",
        "idempotence_key": uuid.uuid4(),
        "event_id": uuid.uuid4(),
    }


def test_applying_an_event_twice_changes_nothing(read_engine: Engine) -> None:
    rows = [event_row(sequence) for sequence in (1, 2, 3)]
    with read_engine.begin() as connection:
        apply_created_events(connection, rows)
    with read_engine.begin() as connection:
        apply_created_events(connection, [rows[1], {**rows[2], "amount": "99.00"}])
    page = ReadModel(read_engine).page(10, None)
    assert [order["id"] for order in page.buy_orders] == [str(row["id"]) for row in reversed(rows)]
    assert page.buy_orders[0]["amount"] == "10.00"
    assert page.has_more is False


def test_pages_follow_each_other_without_gap_or_overlap(read_engine: Engine) -> None:
    with read_engine.begin() as connection:
        apply_created_events(connection, [event_row(sequence) for sequence in range(1, 26)])
    model = ReadModel(read_engine)
    first = model.page(10, None)
    second = model.page(10, uuid.UUID(first.last_reference or ""))
    third = model.page(10, uuid.UUID(second.last_reference or ""))
    assert (first.has_more, second.has_more, third.has_more) == (True, True, False)
    assert len(third.buy_orders) == 5
    with pytest.raises(UnknownReference):
        model.page(10, uuid.uuid4())


@pytest.fixture
def large_read_model(read_engine: Engine) -> Engine:
    with read_engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO buy_order_view
                    (sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount,
                     idempotence_key, event_id)
                SELECT s, gen_random_uuid(), now(), 'USD', '10.00', '97012.34', '0.00010309',
                       gen_random_uuid(), gen_random_uuid()
                FROM generate_series(1, :rows) AS s
                """
            ),
            {"rows": ROWS},
        )
    with read_engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE buy_order_view"))
    return read_engine


def plan(engine: Engine, statement: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The executed plan of one of the service's statements (psycopg2 placeholders)."""
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}", parameters)
        result = cursor.fetchone()[0]
    finally:
        connection.close()
    document = result if isinstance(result, list) else json.loads(result)
    return dict(document[0]["Plan"])


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *[child for plan_ in node.get("Plans", []) for child in nodes(plan_)]]


def page_plan(engine: Engine, page_size: int, reference: uuid.UUID | None) -> dict[str, Any]:
    shape = read_model._Shape("older", reference is not None, 0, False, False)
    return plan(engine, read_model._page_statement(shape), {"limit": page_size + 1, "reference": reference})


@pytest.mark.parametrize("depth", ["first", "middle", "last"])
def test_every_page_is_an_index_scan_touching_about_a_page_of_rows(large_read_model: Engine, depth: str) -> None:
    page_size = 10
    after = {"first": None, "middle": ROWS // 2, "last": page_size + 1}[depth]
    reference = None
    if after is not None:
        with large_read_model.connect() as connection:
            reference = connection.execute(
                text("SELECT id FROM buy_order_view WHERE sequence = :after"), {"after": after}
            ).scalar_one()
    tree = page_plan(large_read_model, page_size, reference)
    kinds = [node["Node Type"] for node in nodes(tree)]
    assert "Seq Scan" not in kinds and "Sort" not in kinds, kinds
    scans = [node for node in nodes(tree) if node["Node Type"] in ("Index Scan", "Index Only Scan")]
    page_scan = next(scan for scan in scans if scan.get("Scan Direction") == "Backward")
    assert page_scan["Index Name"] == "buy_order_view_pkey"
    assert page_scan["Actual Rows"] <= page_size + 1
    buffers = page_scan["Shared Hit Blocks"] + page_scan.get("Shared Read Blocks", 0)
    assert buffers < 20, f"the scan touched {buffers} blocks for {page_size + 1} rows"
    others = [scan for scan in scans if scan is not page_scan]
    if after is None:
        assert others == []
    else:
        # a later page finds its reference by the unique index on id, one row; the newer-side probe
        # (for the Link header) reads one row of the primary key
        assert {scan["Index Name"] for scan in others} == {"buy_order_view_id_key", "buy_order_view_pkey"}
        assert all(scan["Actual Rows"] * scan["Actual Loops"] <= 1 for scan in others)
