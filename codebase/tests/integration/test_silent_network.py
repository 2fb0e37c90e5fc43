"""A silent network failure (packets dropped, no reset) is found in seconds, not hours.

The relay reaches Postgres and RabbitMQ through proxies the test turns into blackholes while
the relay holds a batch of claimed outbox rows: the database ends the session that went
silent in its transaction (`idle_in_transaction_session_timeout`), so the rows are free for
other relays within seconds; once the network is back, the relay reconnects and sends them.
"""

import logging
import socket
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import Engine, text

from btc_orders.adapters import db, rabbitmq
from btc_orders.services.outbox_relay.relay import Relay
from tests.support.blackhole_proxy import BlackholeProxy
from tests.support.services import Databases, wait_until
from tests.support.workers import (
    PROJECTOR_LOG,
    Running,
    log_events,
    place_and_relay,
    projected,
    start_relay,
    store_orders,
)

RELAY_LOG = "btc_orders.services.outbox_relay.relay"


def test_the_proxy_holds_bytes_while_blackholed_and_delivers_them_after() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    with BlackholeProxy("127.0.0.1", server.getsockname()[1]) as proxy:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        peer, _ = server.accept()
        client.sendall(b"ping")
        assert peer.recv(4) == b"ping"
        proxy.blackhole()
        client.sendall(b"lost?")
        peer.settimeout(0.5)
        with pytest.raises(TimeoutError):
            peer.recv(5)
        proxy.restore()
        peer.settimeout(5)
        assert peer.recv(5) == b"lost?", "held, not dropped: TCP would have retransmitted it"
        peer.close()  # the server side ends: the client sees the close, no reset
        assert client.recv(1) == b""
        client.close()
    server.close()


def place(write_engine: Engine, count: int) -> None:
    store_orders(write_engine, count, "GBP", Decimal("3.00"), Decimal("80000.00"))


def place_at_once(write_engine: Engine, count: int) -> None:
    """`count` orders and their outbox rows in one transaction: the relay claims them as one batch."""
    with write_engine.begin() as connection:
        connection.execute(
            text(
                """
                WITH orders AS (
                    INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount)
                    SELECT gen_random_uuid(), gen_random_uuid(), 'USD', 1.00, 90000, 0.00001111
                    FROM generate_series(1, :count)
                    RETURNING sequence
                )
                INSERT INTO outbox (event_id, order_sequence, routing_key, payload)
                SELECT gen_random_uuid(), sequence, 'buy_order.created', '{}' FROM orders
                """
            ),
            {"count": count},
        )


def unsent(write_engine: Engine) -> int:
    with write_engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")).scalar_one())


def free_unsent(write_engine: Engine) -> int:
    """Unsent rows that no transaction holds (what another relay could claim now)."""
    with write_engine.begin() as connection:
        return len(connection.execute(text("SELECT id FROM outbox WHERE sent_at IS NULL FOR UPDATE SKIP LOCKED")).all())


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{port}"))


def test_a_relay_cut_off_while_holding_rows_releases_them_and_reconnects_after(
    databases: Databases, write_engine: Engine, amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=RELAY_LOG)
    database = urlsplit(databases.write_url)
    broker = urlsplit(amqp_url)
    with (
        BlackholeProxy(database.hostname or "127.0.0.1", database.port or 5432) as pg_proxy,
        BlackholeProxy(broker.hostname or "127.0.0.1", broker.port or 5672) as amqp_proxy,
    ):
        engine = db.create_engine(through(databases.write_url, pg_proxy.port), 2)
        relay = Relay(engine, through(amqp_url, amqp_proxy.port))
        stop, thread = start_relay(relay)
        try:
            place(write_engine, 3)
            wait_until(lambda: unsent(write_engine) == 0, 30, 0.1, "the relay to send through the proxies")

            amqp_proxy.blackhole()  # its next batch waits for confirms, holding the claimed rows
            place_at_once(write_engine, 5)
            wait_until(lambda: free_unsent(write_engine) == 0, 30, 0.05, "the relay to claim the new rows")
            pg_proxy.blackhole()  # ... and now its database connection goes silent too
            wait_until(
                lambda: free_unsent(write_engine) == 5,
                db.IDLE_IN_TRANSACTION_TIMEOUT_SECONDS + 20,
                0.2,
                "the database to end the silent session and free its rows",
            )
            assert unsent(write_engine) == 5, "nothing was marked sent meanwhile"

            pg_proxy.restore()
            amqp_proxy.restore()
            wait_until(lambda: unsent(write_engine) == 0, 30, 0.1, "the relay to reconnect and send the rows")
            wait_until(lambda: log_events(caplog, "relay_recovered", RELAY_LOG) >= 1, 10, 0.1, "relay_recovered")
            assert log_events(caplog, "relay_retrying", RELAY_LOG) == 1, "one log event for the outage"
        finally:
            stop.set()
            pg_proxy.restore()
            amqp_proxy.restore()
            thread.join(60)
            engine.dispose()


def test_a_worker_whose_broker_goes_silent_notices_and_reconnects_after(
    databases: Databases,
    write_engine: Engine,
    read_engine: Engine,
    amqp_url: str,
    start_projector,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=PROJECTOR_LOG)
    broker = urlsplit(amqp_url)
    with BlackholeProxy(broker.hostname or "127.0.0.1", broker.port or 5672) as proxy:
        running: Running = start_projector(read_engine, through(amqp_url, proxy.port))
        place_and_relay(write_engine, amqp_url, 2)
        wait_until(lambda: projected(read_engine) == 2, 30, 0.1, "events through the proxy")
        proxy.blackhole()
        # Missed heartbeats (two intervals) end the connection; reconnects time out meanwhile.
        wait_until(
            lambda: log_events(caplog, "broker_unavailable") == 1,
            rabbitmq.HEARTBEAT_SECONDS * 3 + 15,
            0.2,
            "the worker to notice the silent broker",
        )
        place_and_relay(write_engine, amqp_url, 3)
        wait_until(lambda: running.projector._broker_outage.attempts >= 2, 60, 0.2, "a reconnect timing out")
        proxy.restore()
        wait_until(lambda: projected(read_engine) == 5, 60, 0.1, "the worker to reconnect and catch up")
        assert log_events(caplog, "broker_unavailable") == 1, "one log event for the outage"
        assert log_events(caplog, "broker_available") == 1
        assert running.alive() and not running.failure, "a handshake timing out did not end the worker"
