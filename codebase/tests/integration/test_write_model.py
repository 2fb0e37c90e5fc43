"""The write model on a real Postgres: storing, replaying, the cap under concurrency."""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from btc_orders.adapters import db, outbox
from btc_orders.adapters import write_model as write_model_module
from btc_orders.adapters.write_model import WriteModel
from btc_orders.domain import money
from btc_orders.domain.errors import BtcCapExceeded
from btc_orders.domain.orders import Currency, OrderRequest
from btc_orders.events import created_event, parse_created_event
from tests.support.services import Databases

RATE = Decimal("100000.00")  # 1 USD = 0.00001 BTC = 1,000 satoshis


def order(amount: str, currency: Currency = Currency.USD, key: uuid.UUID | None = None) -> OrderRequest:
    return OrderRequest(currency, Decimal(amount), key or uuid.uuid4())


def ledger_total(engine: Engine) -> tuple[int, int]:
    """(sum of orders, sum of slots) in satoshis."""
    with engine.connect() as connection:
        used = connection.execute(text("SELECT coalesce(sum(bitcoin_amount), 0) FROM buy_order")).scalar_one()
        left = connection.execute(text("SELECT coalesce(sum(remaining_satoshis), 0) FROM cap_slot")).scalar_one()
    return money.btc_to_satoshis(used), int(left)


def model(engine: Engine, cap_btc: str, slots: int = 16) -> WriteModel:
    write_model = WriteModel(engine, slots)
    write_model.ensure_cap(money.btc_to_satoshis(Decimal(cap_btc)))
    return write_model


def test_an_order_is_stored_with_its_outbox_event(write_engine: Engine) -> None:
    write_model = model(write_engine, "100")
    stored, created = write_model.place(order("123.45"), Decimal("97012.34"), "req-1")
    assert created
    assert stored.bitcoin_amount == Decimal("0.00127252")
    with write_engine.begin() as connection:
        event = connection.execute(text("SELECT order_sequence, request_id, sent_at FROM outbox")).one()
        [claimed] = outbox.claim(connection, 10)
    assert event.order_sequence == stored.sequence
    assert '"bitcoin_amount":"0.00127252"' in claimed.payload
    assert event.request_id == claimed.request_id == "req-1"
    assert event.sent_at is None


def test_the_same_key_returns_the_stored_order_and_stores_nothing_more(write_engine: Engine) -> None:
    write_model = model(write_engine, "100")
    request = order("10.00")
    first, created = write_model.place(request, RATE, None)
    again, created_again = write_model.place(request, Decimal("1.00"), None)
    assert created and not created_again
    assert again == first
    assert ledger_total(write_engine) == (10_000, 100 * 10**8 - 10_000)


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "transactions"])
def test_the_one_statement_is_prepared_once_per_connection_and_again_when_forgotten(
    databases: Databases, autocommit: bool
) -> None:
    """The fast path's statement is a prepared one (run on the raw pooled connection): on an
    engine in autocommit (the service's) or not, an order is stored and committed, and a
    connection whose statements were dropped behind the pool's back prepares it again."""
    engine = db.create_engine(databases.write_url, pool_size=1, autocommit=autocommit)
    try:
        write_model = WriteModel(engine, 4, engine_autocommit=autocommit)
        write_model.ensure_cap(money.btc_to_satoshis(Decimal("100")))
        write_model.place(order("1.00"), RATE, None)
        with engine.connect() as connection:
            prepared = connection.exec_driver_sql("SELECT name FROM pg_prepared_statements").scalars().all()
            assert prepared == ["place_order"]
            connection.exec_driver_sql("DEALLOCATE ALL")
            connection.commit()
        write_model.place(order("2.00"), RATE, None)
        write_model.place(order("3.00"), RATE, None)
        assert ledger_total(engine) == (6_000, 100 * 10**8 - 6_000)
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")).scalar_one()
        assert stored == 3
    finally:
        engine.dispose()


def test_the_generic_plan_of_the_one_statement_finds_the_key_by_its_index_from_the_first_order(
    write_engine: Engine,
) -> None:
    """Prepared with `force_generic_plan`, the statement is planned once for any key and slot, and
    kept until the next ANALYZE of its tables. Planned on a new deployment's tables (empty, never
    analyzed), that plan must already look the key up by its index, not read every order: it
    serves every order until autovacuum first analyzes the table, however many are stored
    meanwhile. Planned again after an ANALYZE, it still does."""
    write_model = model(write_engine, "100")

    statement = write_model_module._PLACE_IN_ONE_STATEMENT
    explain = db.Prepared(statement.name, statement.prepare, f"EXPLAIN (FORMAT JSON) {statement.execute}")
    values = (uuid.uuid4(), 1000, 0, uuid.uuid4(), "USD", Decimal(1), RATE, Decimal("0.00001"), None, uuid.uuid4(), "x")
    connection = write_engine.raw_connection()
    try:
        cursor = db.run_prepared(connection, explain, values)  # prepared and planned on the empty table
        for _ in range(2_000):
            write_model.place(order("0.01"), RATE, None)
        cursor.execute(explain.execute, values)  # the same connection: the plan made while empty
        plans = [cursor.fetchone()[0][0]["Plan"]]
        cursor.execute("ANALYZE buy_order")
        cursor.execute(explain.execute, values)  # planned again, with the statistics
        plans.append(cursor.fetchone()[0][0]["Plan"])
        connection.dbapi_connection.rollback()
    finally:
        connection.close()
    for plan in plans:
        flat = [plan]
        for node in flat:
            flat.extend(node.get("Plans", []))
        assert "buy_order" not in {node["Relation Name"] for node in flat if node["Node Type"] == "Seq Scan"}, flat
        scanned = {node.get("Index Name") for node in flat if node["Node Type"] in ("Index Scan", "Index Only Scan")}
        assert "buy_order_idempotence_key_key" in scanned, scanned


def test_orders_are_never_updated_or_deleted(write_engine: Engine) -> None:
    write_model = model(write_engine, "100")
    write_model.place(order("10.00"), RATE, None)
    for statement in ("UPDATE buy_order SET amount = 1", "DELETE FROM buy_order"):
        with pytest.raises(DBAPIError, match="never updated or deleted"), write_engine.begin() as connection:
            connection.execute(text(statement))


def test_an_order_that_does_not_fit_is_refused_with_what_is_left(write_engine: Engine) -> None:
    write_model = model(write_engine, "0.01")  # 1,000,000 satoshis = 1,000 USD at RATE
    write_model.place(order("600.00"), RATE, None)
    with pytest.raises(BtcCapExceeded) as refused:
        write_model.place(order("400.01"), RATE, None)
    assert refused.value.available == Decimal("0.00400000")
    _stored, created = write_model.place(order("400.00"), RATE, None)  # exactly up to the cap is allowed
    assert created
    assert ledger_total(write_engine) == (1_000_000, 0)


def test_a_refused_order_leaves_its_key_unused(write_engine: Engine) -> None:
    write_model = model(write_engine, "0.001")
    key = uuid.uuid4()
    with pytest.raises(BtcCapExceeded):
        write_model.place(order("500.00", key=key), RATE, None)
    assert write_model.find_by_key(key) is None
    _, created = write_model.place(order("50.00", key=key), RATE, None)
    assert created


def test_an_order_above_the_whole_cap_is_refused_before_the_database(write_engine: Engine) -> None:
    write_model = model(write_engine, "100")
    with pytest.raises(BtcCapExceeded):
        write_model.place(order("999999999.99"), Decimal("0.000001"), None)


def test_capacity_moves_between_slots_when_one_runs_low(write_engine: Engine) -> None:
    # Every order lands in slot 0, so all but the first few must borrow from the others.
    write_model = WriteModel(write_engine, 4, choose=lambda _: 0)
    write_model.ensure_cap(4_000_000)
    for _ in range(4):
        write_model.place(order("1000.00"), RATE, None)  # 1,000,000 satoshis each
    assert ledger_total(write_engine) == (4_000_000, 0)
    with pytest.raises(BtcCapExceeded):
        write_model.place(order("0.01"), RATE, None)


def test_changing_the_cap_keeps_what_orders_use(write_engine: Engine) -> None:
    write_model = model(write_engine, "1")
    write_model.place(order("30000.00"), RATE, None)  # 0.3 BTC
    model(write_engine, "2", slots=8)
    assert ledger_total(write_engine) == (30_000_000, 170_000_000)
    model(write_engine, "0.1")  # below what is used: nothing left, nothing undone
    assert ledger_total(write_engine) == (30_000_000, 0)
    with write_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM cap_slot")).scalar_one() == 16


@pytest.mark.parametrize("round_", range(3))
def test_racing_orders_never_take_the_total_above_the_cap(write_engine: Engine, round_: int) -> None:
    race_to_the_cap(model(write_engine, "0.01"), write_engine, round_)


@pytest.mark.parametrize("round_", range(2))
def test_racing_orders_on_the_services_autocommit_engine_never_take_the_total_above_the_cap(
    databases: Databases, round_: int
) -> None:
    """The same race on an engine like create_buy_order's: autocommit, transactions only where needed."""
    engine = db.create_engine(databases.write_url, pool_size=40, autocommit=True)
    try:
        write_model = WriteModel(engine, 16, engine_autocommit=True)
        write_model.ensure_cap(money.btc_to_satoshis(Decimal("0.01")))
        race_to_the_cap(write_model, engine, round_)
    finally:
        engine.dispose()


def test_racing_the_same_key_on_the_services_autocommit_engine_stores_one_order(databases: Databases) -> None:
    engine = db.create_engine(databases.write_url, pool_size=40, autocommit=True)
    try:
        write_model = WriteModel(engine, 16, engine_autocommit=True)
        write_model.ensure_cap(money.btc_to_satoshis(Decimal("100")))
        race_one_key(write_model, engine)
    finally:
        engine.dispose()


def race_to_the_cap(write_model: WriteModel, engine: Engine, round_: int) -> None:
    # 0.01 BTC cap; 64 threads race orders of random sizes over 16 slots.
    sizes = [f"{(i * 37 + round_ * 11) % 90 + 10}.00" for i in range(200)]
    start = threading.Barrier(64)

    def place(index: int) -> bool:
        if index < 64:
            start.wait()
        try:
            write_model.place(order(sizes[index]), RATE, None)
            return True
        except BtcCapExceeded:
            return False

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(place, range(len(sizes))))
    used, left = ledger_total(engine)
    assert used + left == 1_000_000
    assert used <= 1_000_000
    assert any(results) and not all(results)
    # Every refusal was right: the smallest order (10 USD = 10,000 sat) no longer fit... or
    # the refused order itself did not fit what was left at the end.
    refused = [money.btc_to_satoshis(Decimal(sizes[i]) / 100000) for i, ok in enumerate(results) if not ok]
    assert all(size > left for size in refused)


def test_racing_the_same_key_stores_one_order(write_engine: Engine) -> None:
    race_one_key(model(write_engine, "100"), write_engine)


def race_one_key(write_model: WriteModel, engine: Engine) -> None:
    request = order("25.00")
    start = threading.Barrier(32)

    def place(_: int) -> tuple[uuid.UUID, bool]:
        start.wait()
        stored, created = write_model.place(request, RATE, None)
        return stored.id, created

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(place, range(32)))
    assert len({order_id for order_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM outbox")).scalar_one() == 1


@pytest.mark.parametrize(
    "request_id",
    [None, "req-1", '"occurred_at":"2999-12-31T23:59:59.999999Z"', "2999-12-31T23:59:59.999999Z", '\\"}}'],
)
@pytest.mark.parametrize(("cap_btc", "untouched_slots"), [("100", 15), ("0.0016", 0)], ids=["fast path", "slow path"])
def test_the_published_event_is_exactly_the_one_events_renders_for_the_answered_order(
    write_engine: Engine, request_id: str | None, cap_btc: str, untouched_slots: int
) -> None:
    # The outbox row holds no payload: the relay renders it from the stored order (read back from
    # the database), which must give byte for byte the event of the order the client was answered.
    # A cap of 0.0016 BTC leaves 0.0001 in each of the 16 slots: this order (0.00010824) needs the slow path.
    write_model = model(write_engine, cap_btc)
    stored, created = write_model.place(order("10.50", Currency.EUR), Decimal("97012.340"), request_id)
    assert created
    share = money.btc_to_satoshis(Decimal(cap_btc)) // 16
    with write_engine.begin() as connection:
        slots = connection.execute(text("SELECT remaining_satoshis FROM cap_slot")).scalars().all()
        assert sum(1 for left in slots if left == share) == untouched_slots
        assert connection.execute(text("SELECT payload FROM outbox")).scalar_one() is None
        [event] = outbox.claim(connection, 10)
    assert event.payload == created_event(stored, event.event_id, request_id)
    assert parse_created_event(event.payload.encode()).order.sequence == stored.sequence
