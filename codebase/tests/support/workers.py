"""The workers in the test's own process: orders relayed into a vhost, a projector in a thread."""

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from btc_orders.adapters import outbox, rabbitmq
from btc_orders.domain import money
from btc_orders.services.outbox_relay.relay import Relay
from btc_orders.services.read_model_sync.projector import Projector
from btc_orders.services.worker import StopFlag
from tests.support.services import rabbitmqctl

PROJECTOR_LOG = "btc_orders.services.read_model_sync.projector"
CAP_SATOSHIS = 100 * 10**8

# An order as the create path stores it: its BTC taken from a slot of the cap ledger, the order and
# its outbox row (the outbox's own fragment) in one statement. psycopg's placeholders, as the fragment's.
_STORE = f"""
    WITH s AS (
        UPDATE cap_slot SET remaining_satoshis = remaining_satoshis - %(satoshis)s WHERE slot = 0 RETURNING slot
    ), o AS (
        INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount, request_id)
        SELECT %(id)s, %(key)s, %(currency)s, %(amount)s, %(exchange_rate)s, %(bitcoin_amount)s, %(request_id)s
        FROM s
        RETURNING sequence
    ), e AS (
        {outbox.INSERT_FROM_ORDER_CTE}
    )
    SELECT sequence FROM o
"""
_LEDGER = (
    "INSERT INTO cap_ledger (cap_satoshis) VALUES (%(cap)s) ON CONFLICT DO NOTHING",
    "INSERT INTO cap_slot (slot, remaining_satoshis) VALUES (0, %(cap)s) ON CONFLICT DO NOTHING",
)


def store_orders(
    write_engine: Engine,
    count: int,
    currency: str = "EUR",
    amount: Decimal = Decimal("10.00"),
    exchange_rate: Decimal = Decimal("90000.00"),
    request_ids: Sequence[str | None] | None = None,
) -> None:
    """`count` orders stored as the create path stores them (each with its cap deduction and its
    unsent outbox row), under a cap ledger of 100 BTC (one slot); `request_ids[i]` is the i-th's."""
    bitcoin_amount = money.bitcoin_amount(amount, exchange_rate)
    rows = [
        {
            "satoshis": money.btc_to_satoshis(bitcoin_amount),
            "id": uuid.uuid4(),
            "key": uuid.uuid4(),
            "currency": currency,
            "amount": amount,
            "exchange_rate": exchange_rate,
            "bitcoin_amount": bitcoin_amount,
            "request_id": request_ids[index] if request_ids is not None else None,
            "event_id": uuid.uuid4(),
            "routing_key": rabbitmq.ROUTING_KEY,
        }
        for index in range(count)
    ]
    with write_engine.begin() as connection:
        for statement in _LEDGER:
            connection.exec_driver_sql(statement, {"cap": CAP_SATOSHIS})
        connection.exec_driver_sql(_STORE, rows)  # type: ignore[arg-type]  # a list of rows: executemany


def place_and_relay(write_engine: Engine, amqp_url: str, count: int) -> None:
    store_orders(write_engine, count, "USD")
    relay = Relay(write_engine, amqp_url)
    while relay.relay_once():
        pass
    relay.close()


def projected(read_engine: Engine) -> int:
    """Rows in the read model, on a connection of its own (the faults end the pooled ones)."""
    read_engine.dispose()
    with read_engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM buy_order_view")).scalar_one())


def queue_counts(amqp_url: str) -> dict[str, tuple[int, int]]:
    """queue -> (ready, unacknowledged)."""
    vhost = amqp_url.rsplit("/", 1)[1]
    lines = rabbitmqctl(
        "list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged", "--no-table-headers", "-q"
    ).splitlines()
    counts = {}
    for line in lines:
        name, ready, unacked = line.split("\t")
        counts[name] = (int(ready), int(unacked))
    return counts


def start_relay(relay: Relay) -> tuple[StopFlag, threading.Thread]:
    """`relay` running on a daemon thread until the returned flag is set (the caller joins it)."""
    stop = StopFlag(signals=False)
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def log_events(caplog: pytest.LogCaptureFixture, name: str, logger: str = PROJECTOR_LOG) -> int:
    return sum(1 for record in caplog.records if record.name == logger and record.getMessage() == name)


@dataclass
class Running:
    projector: Projector
    stop: StopFlag
    thread: threading.Thread
    failure: list[BaseException]

    def alive(self) -> bool:
        return self.thread.is_alive()


@pytest.fixture
def start_projector() -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(engine: Engine, amqp_url: str, prefetch: int = 100, batch_wait_seconds: float = 0.3) -> Running:
        projector = Projector(engine, amqp_url, prefetch=prefetch, batch_wait_seconds=batch_wait_seconds)
        stop = StopFlag(signals=False)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                projector.run(stop)
            except BaseException as error:  # the test asserts there is none
                failure.append(error)
                raise

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        running = Running(projector, stop, thread, failure)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop.set()
        running.thread.join(30)
