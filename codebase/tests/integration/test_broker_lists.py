"""`AMQP_URL` as a list of brokers (a cluster's nodes): the first that answers is used, the next one
when it is lost; a list whose every broker is dead is an outage told in one line, URLs masked."""

import json
import logging
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine

from btc_orders import urls
from btc_orders.adapters import rabbitmq
from btc_orders.services.outbox_relay.relay import Relay
from tests.support.blackhole_proxy import BlackholeProxy
from tests.support.services import Databases, ServiceProcess, base_env, free_port, wait_until
from tests.support.urls import at_port, broker_list
from tests.support.workers import PROJECTOR_LOG, Running, log_events, projected, start_relay, store_orders

RELAY_LOG = "btc_orders.services.outbox_relay.relay"


def connected_to(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [
        record.event_fields["broker"]  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == logger and record.getMessage() == "broker_connected"
    ]


def test_the_relay_and_the_worker_use_the_first_broker_that_answers(
    write_engine: Engine,
    read_engine: Engine,
    amqp_url: str,
    start_projector: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    brokers = broker_list(amqp_url)  # the first refuses: nothing listens there
    store_orders(write_engine, 5)
    relay = Relay(write_engine, brokers)
    try:
        assert relay.relay_once() == 5
    finally:
        relay.close()
    start_projector(read_engine, brokers)
    wait_until(lambda: projected(read_engine) == 5, 30, 0.1, "the worker to project the 5 events")
    assert connected_to(caplog, RELAY_LOG) == [urls.mask(amqp_url)]
    assert connected_to(caplog, PROJECTOR_LOG) == [urls.mask(amqp_url)]
    assert "guest:guest" not in caplog.text


def test_the_relay_and_the_worker_move_to_the_next_broker_when_theirs_is_lost(
    write_engine: Engine,
    read_engine: Engine,
    amqp_url: str,
    start_projector: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    broker = urlsplit(amqp_url)
    with BlackholeProxy(broker.hostname or "127.0.0.1", broker.port or 5672) as first:
        brokers = f"{at_port(amqp_url, first.port)};{amqp_url}"
        relay = Relay(write_engine, brokers)
        stop, thread = start_relay(relay)
        running = start_projector(read_engine, brokers)
        try:
            store_orders(write_engine, 3)
            wait_until(lambda: projected(read_engine) == 3, 30, 0.1, "3 events through the first broker")
            assert (
                connected_to(caplog, RELAY_LOG)
                == connected_to(caplog, PROJECTOR_LOG)
                == [urls.mask(brokers.split(";")[0])]
            )

            first.stop()  # the first broker is gone: its connections closed, new ones refused
            store_orders(write_engine, 4)
            wait_until(lambda: projected(read_engine) == 7, 60, 0.1, "4 more events through the second broker")
            assert connected_to(caplog, RELAY_LOG)[-1] == connected_to(caplog, PROJECTOR_LOG)[-1] == urls.mask(amqp_url)
            assert log_events(caplog, "relay_retrying", RELAY_LOG) <= 1, "one log event for the lost broker"
            assert running.alive() and thread.is_alive() and not running.failure
        finally:
            stop.set()
            thread.join(30)


def test_a_list_whose_every_broker_is_dead_is_one_masked_line(write_engine: Engine, amqp_url: str) -> None:
    dead = [at_port(amqp_url, free_port(), "secret"), at_port(amqp_url, free_port(), "secret")]
    store_orders(write_engine, 1)
    relay = Relay(write_engine, ";".join(dead))
    with pytest.raises(rabbitmq.NoBrokerAnswered) as raised:
        relay.relay_once()
    relay.close()
    told = str(raised.value)
    assert len(told.splitlines()) == 1
    assert told.startswith("no broker of the 2 in AMQP_URL answered: ")
    assert urls.mask(dead[0]) in told and urls.mask(dead[1]) in told
    assert "secret" not in told


def test_a_worker_prints_its_urls_masked_and_retries_a_dead_list(
    databases: Databases, amqp_url: str, tmp_path: Path
) -> None:
    dead = ";".join(at_port(amqp_url, free_port(), "secret") for _ in range(2))
    write_url = databases.write_url.replace("postgres@", "postgres:secret@", 1)  # trust: any password does
    env = base_env(WRITE_MODEL_DB_URL=write_url, AMQP_URL=dead, OUTBOX_RELAY_METRICS_PORT="0")
    relay = ServiceProcess("outbox_relay", env, tmp_path / "outbox_relay.log").start(wait=False)
    try:
        wait_until(lambda: '"relay_retrying"' in relay.logs(), 30, 0.1, "the relay to meet the dead brokers")
    finally:
        relay.stop()
    lines = [json.loads(line) for line in relay.logs().splitlines() if line.startswith("{")]
    started = next(line for line in lines if line["event"] == "relay_started")
    assert started["broker"] == urls.mask(dead) and started["database"] == urls.mask(write_url)
    retrying = next(line for line in lines if line["event"] == "relay_retrying")
    assert retrying["reason"].startswith("NoBrokerAnswered: no broker of the 2 in AMQP_URL answered")
    assert "secret" not in relay.logs()
