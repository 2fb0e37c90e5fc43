"""The cap ledger while replicas start: `ensure_cap` changes it in place, replicas that disagree say so."""

import logging
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg2
import pytest
from sqlalchemy import Engine, text

from btc_orders.adapters.write_model import WriteModel
from btc_orders.domain import money
from btc_orders.domain.errors import BtcCapExceeded
from btc_orders.domain.orders import Currency, OrderRequest
from tests.support.services import Databases, dsn, wait_until

RATE = Decimal("100000.00")  # 1 USD = 1,000 satoshis


def order(amount: str) -> OrderRequest:
    return OrderRequest(Currency.USD, Decimal(amount), uuid.uuid4())


def ledger(engine: Engine) -> tuple[int, int, int]:
    """(satoshis used by orders, satoshis the slots hold, number of slots)."""
    with engine.connect() as connection:
        used = connection.execute(text("SELECT coalesce(sum(bitcoin_amount), 0) FROM buy_order")).scalar_one()
        left, slots = connection.execute(
            text("SELECT coalesce(sum(remaining_satoshis), 0), count(*) FROM cap_slot")
        ).one()
    return money.btc_to_satoshis(used), int(left), int(slots)


def lock_waiters(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(DISTINCT pid) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                    " WHERE NOT l.granted AND a.datname = current_database()"
                )
            ).scalar_one()
        )


def disagreements(caplog: pytest.LogCaptureFixture, setting: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.getMessage() == "cap_ledger_disagrees" and getattr(record, "event_fields", {})["setting"] == setting
    ]


@pytest.mark.parametrize(
    ("other_slots", "other_cap"),
    [(4, 1_000_000), (2, 2_000_000), (2, 900_000)],
    ids=["more_slots", "higher_cap", "lower_cap_that_still_fits"],
)
def test_an_order_waiting_on_the_slots_while_another_replica_starts_is_stored(
    databases: Databases, write_engine: Engine, other_slots: int, other_cap: int
) -> None:
    # Two slots, everything in slot 0; the order tries slot 1 (empty), so it must lock them all.
    serving = WriteModel(write_engine, 2, choose=lambda _: 1)
    serving.ensure_cap(1_000_000)
    with write_engine.begin() as connection:
        connection.execute(text("UPDATE cap_slot SET remaining_satoshis = CASE slot WHEN 0 THEN 1000000 ELSE 0 END"))
    blocker = psycopg2.connect(dsn(databases.write_name))  # a fast-path order on slot 0, not committed yet
    with blocker.cursor() as cursor:
        cursor.execute("SELECT 1 FROM cap_slot WHERE slot = 0 FOR UPDATE")
    starting = threading.Thread(target=WriteModel(write_engine, other_slots).ensure_cap, args=(other_cap,))
    starting.start()  # the other replica's start queues on slot 0 first
    wait_until(lambda: lock_waiters(write_engine) == 1, 10, 0.01, "ensure_cap to wait on slot 0")
    answers: list[object] = []

    def place() -> None:
        try:
            answers.append(serving.place(order("500.00"), RATE, None)[1])
        except BtcCapExceeded as error:
            answers.append(error)

    placing = threading.Thread(target=place)
    placing.start()  # then the order, behind it: it will see the ledger as ensure_cap leaves it
    wait_until(lambda: lock_waiters(write_engine) == 2, 10, 0.01, "the order to wait on slot 0")
    blocker.rollback()
    blocker.close()
    starting.join(10)
    placing.join(10)
    assert answers == [True]
    used, left, slots = ledger(write_engine)
    assert (used, used + left, slots) == (500_000, other_cap, max(2, other_slots))


@pytest.mark.parametrize("round_", range(2))
def test_replicas_starting_while_orders_fill_the_cap_exactly_never_refuse_one(
    write_engine: Engine, round_: int
) -> None:
    cap = 1_000_000  # 0.01 BTC; the 200 orders below add up to exactly that: every one of them fits
    sizes = [("3.00", "7.00")[(i * 7 + round_) % 2] for i in range(200)]
    assert sum(money.bitcoin_satoshis(Decimal(size), RATE) for size in sizes) == cap
    replicas = [WriteModel(write_engine, 16) for _ in range(2)]
    for replica in replicas:
        replica.ensure_cap(cap)
    stop = threading.Event()

    def start_replicas(offset: int) -> int:
        starts = 0
        while not stop.is_set():  # replicas of other slot counts start, over and over
            WriteModel(write_engine, 8 + (starts * 5 + offset) % 24).ensure_cap(cap)
            starts += 1
        return starts

    def place(index: int) -> str:
        try:
            replicas[index % 2].place(order(sizes[index]), RATE, None)
            return "stored"
        except BtcCapExceeded as error:
            return f"refused with {error.available} BTC available"

    with ThreadPoolExecutor(3) as starters:
        starts = [starters.submit(start_replicas, offset) for offset in range(3)]
        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(place, range(len(sizes))))
        stop.set()
    assert all(start.result() > 0 for start in starts)
    assert Counter(results) == {"stored": 200}
    assert ledger(write_engine)[:2] == (cap, 0)


def test_a_replica_with_fewer_slots_than_exist_uses_them_all_and_says_so_once(
    write_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    WriteModel(write_engine, 16).ensure_cap(1_000_000)
    caplog.set_level(logging.WARNING)
    fewer = WriteModel(write_engine, 4)
    fewer.ensure_cap(1_000_000)
    fewer.ensure_cap(1_000_000)
    assert fewer.slots == tuple(range(16))
    assert ledger(write_engine)[1:] == (1_000_000, 16)
    [logged] = disagreements(caplog, "CAP_LEDGER_SLOTS")
    assert logged.event_fields["configured"] == 4 and logged.event_fields["ledger"] == 16  # type: ignore[attr-defined]
    assert "CAP_LEDGER_SLOTS" in logged.event_fields["message"]  # type: ignore[attr-defined]


def test_a_replica_with_more_slots_adds_empty_ones_and_the_others_learn_them(
    write_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    running = WriteModel(write_engine, 4, choose=lambda n: n - 1)  # always the last slot it knows
    running.ensure_cap(1_000_000)
    WriteModel(write_engine, 8).ensure_cap(1_000_000)
    with write_engine.connect() as connection:
        slots = dict(connection.execute(text("SELECT slot, remaining_satoshis FROM cap_slot")).all())
    assert slots == {0: 250_000, 1: 250_000, 2: 250_000, 3: 250_000, 4: 0, 5: 0, 6: 0, 7: 0}  # nothing moved
    caplog.set_level(logging.WARNING)
    for _ in range(3):  # slot 3 runs dry, then the slow path spreads over all 8
        running.place(order("100.00"), RATE, None)
    assert running.slots == tuple(range(8))
    assert ledger(write_engine) == (300_000, 700_000, 8)
    assert len(disagreements(caplog, "CAP_LEDGER_SLOTS")) == 1


def test_a_replica_whose_cap_differs_uses_the_ledgers_and_says_so_once(
    write_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    running = WriteModel(write_engine, 2)
    running.ensure_cap(1_000_000)  # BTC_CAP=0.01
    WriteModel(write_engine, 2).ensure_cap(2_000_000)  # another replica starts with BTC_CAP=0.02
    caplog.set_level(logging.WARNING)
    # 0.015 BTC: above the cap `running` was started with, within the ledger's: stored
    _stored, created = running.place(order("1500.00"), RATE, None)
    assert created and running.cap_satoshis == 2_000_000
    with pytest.raises(BtcCapExceeded) as refused:
        running.place(order("600.00"), RATE, None)
    assert refused.value.available == Decimal("0.00500000")
    [logged] = disagreements(caplog, "BTC_CAP")
    assert logged.event_fields["configured"] == Decimal("0.01")  # type: ignore[attr-defined]
    assert logged.event_fields["ledger"] == Decimal("0.02")  # type: ignore[attr-defined]


def test_restarting_with_another_cap_changes_the_ledger_in_place_and_logs_it(
    write_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    WriteModel(write_engine, 4).ensure_cap(1_000_000)
    caplog.set_level(logging.WARNING)
    WriteModel(write_engine, 4).ensure_cap(600_000)
    assert ledger(write_engine) == (0, 600_000, 4)
    [changed] = [record for record in caplog.records if record.getMessage() == "cap_ledger_changed"]
    assert changed.event_fields["from_btc"] == Decimal("0.01")  # type: ignore[attr-defined]
    assert changed.event_fields["to_btc"] == Decimal("0.006")  # type: ignore[attr-defined]
