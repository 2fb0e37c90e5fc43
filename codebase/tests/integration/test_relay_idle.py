"""The idle relay: it polls with an autocommit probe, and claims only when the probe finds a row.

Rows committed while the relay idles are sent by a later poll; the probe's connection killed by
the server (a failover, an operator's `pg_terminate_backend`) is an outage like any other: the
relay logs it once, opens a new connection and sends what came meanwhile. A pool of one
connection is enough for the relay (the admin CLI's `outbox resend` runs it so):
tests/integration/test_admin.py.
"""

import logging
import time

import pytest
from sqlalchemy import Engine, text

from btc_orders.adapters import db
from btc_orders.services.outbox_relay.relay import Relay
from tests.support.services import Databases, wait_until
from tests.support.workers import log_events, start_relay, store_orders

RELAY_LOG = "btc_orders.services.outbox_relay.relay"
APPLICATION = "relay_idle_test"


def place(write_engine: Engine, count: int) -> None:
    store_orders(write_engine, count)


def unsent(write_engine: Engine) -> int:
    with write_engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")).scalar_one())


def terminate_relay_backends(write_engine: Engine) -> int:
    with write_engine.connect() as connection:
        return len(
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name"),
                {"name": APPLICATION},
            ).all()
        )


def test_rows_placed_while_the_relay_idles_are_sent_and_a_killed_probe_connection_is_replaced(
    databases: Databases, write_engine: Engine, amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=RELAY_LOG)
    engine = db.create_engine(databases.write_url, 2, application_name=APPLICATION)
    relay = Relay(engine, amqp_url)
    stop, thread = start_relay(relay)
    try:
        place(write_engine, 1)
        wait_until(lambda: unsent(write_engine) == 0, 30, 0.05, "the first row to be sent")
        time.sleep(0.5)  # idle: many polls find nothing
        place(write_engine, 2)
        wait_until(lambda: unsent(write_engine) == 0, 30, 0.05, "rows placed while idle to be sent")

        assert terminate_relay_backends(write_engine) >= 1, "the relay's pool keeps its connections open"
        place(write_engine, 3)
        wait_until(lambda: unsent(write_engine) == 0, 30, 0.05, "the relay to reconnect and send the new rows")
        wait_until(lambda: log_events(caplog, "relay_recovered", RELAY_LOG) == 1, 10, 0.05, "relay_recovered")
        assert log_events(caplog, "relay_retrying", RELAY_LOG) == 1, "one log event for the lost connection"
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(30)
        engine.dispose()
    assert not thread.is_alive(), "the relay stops within its bounded waits"
