"""The workers in the test's own process: orders relayed into a vhost, a projector in a thread."""

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from btc_orders.adapters.write_model import WriteModel
from btc_orders.domain.orders import Currency, OrderRequest
from btc_orders.services.outbox_relay.relay import Relay
from btc_orders.services.read_model_sync.projector import Projector
from btc_orders.services.worker import StopFlag
from tests.support.services import rabbitmqctl

PROJECTOR_LOG = "btc_orders.services.read_model_sync.projector"


def place_and_relay(write_engine: Engine, amqp_url: str, count: int) -> None:
    write_model = WriteModel(write_engine)
    write_model.ensure_cap(100 * 10**8)
    for _ in range(count):
        write_model.place(OrderRequest(Currency.USD, Decimal("10.00"), uuid.uuid4()), Decimal("90000.00"), None)
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
