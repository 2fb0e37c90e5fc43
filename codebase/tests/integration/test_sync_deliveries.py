"""read_model_sync never pushes a valid event towards the queue's delivery limit.

Quorum queues count each return of a message (RabbitMQ 4.0 counts a channel closed with the
message unacked too) and dead-letter it past `x-delivery-limit`. A graceful stop returns
nothing, and a valid event held through an outage while its deliveries are used up is
republished fresh, so restarts and reconnects cannot turn valid events into dead letters.
"""

import logging

import pytest
from sqlalchemy import Engine

from btc_orders.adapters import rabbitmq
from btc_orders.services.read_model_sync.projector import WORN_DELIVERIES
from tests.support.services import Databases, rabbitmqctl, sql, wait_until
from tests.support.workers import PROJECTOR_LOG, Running, log_events, place_and_relay, projected, queue_counts


def slow_down_the_read_model(database: str, seconds_per_row: float) -> None:
    sql(
        database,
        f"""
        CREATE FUNCTION slowly() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep({seconds_per_row}); RETURN NEW; END $$
        """,
        "CREATE TRIGGER slowly BEFORE INSERT ON buy_order_view FOR EACH ROW EXECUTE FUNCTION slowly()",
    )


def test_graceful_stops_in_the_middle_of_a_backlog_return_no_message(
    databases: Databases,
    write_engine: Engine,
    read_engine: Engine,
    amqp_url: str,
    start_projector,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=PROJECTOR_LOG)
    total = 1000
    place_and_relay(write_engine, amqp_url, total)
    slow_down_the_read_model(databases.read_name, 0.003)
    stops = 0
    while (done := projected(read_engine)) < total:
        running: Running = start_projector(read_engine, amqp_url, prefetch=20, batch_wait_seconds=0.01)
        wait_until(lambda d=done: projected(read_engine) > d, 30, 0.02, "some progress")
        running.stop.set()  # SIGTERM in the real process
        running.thread.join(30)
        assert not running.thread.is_alive() and not running.failure
        stops += 1
    assert stops > rabbitmq.DELIVERY_LIMIT, "enough stops to have reached the limit if each returned messages"
    redelivered = [
        record
        for record in caplog.records
        if record.getMessage() == "event_applied" and getattr(record, "event_fields", {}).get("redelivered")
    ]
    assert redelivered == [], f"{len(redelivered)} event(s) came back after a graceful stop"
    assert queue_counts(amqp_url)[rabbitmq.DEAD_LETTER_QUEUE] == (0, 0)
    assert log_events(caplog, "event_applied") == total


def worker_connections(vhost: str) -> list[str]:
    lines = rabbitmqctl("list_connections", "pid", "vhost", "client_properties", "--no-table-headers").splitlines()
    return [line.split("\t")[0] for line in lines if f"\t{vhost}\t" in line and "read_model_sync" in line]


def test_valid_events_held_through_an_outage_and_many_reconnects_are_never_dead_lettered(
    databases: Databases,
    write_engine: Engine,
    read_engine: Engine,
    amqp_url: str,
    start_projector,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=PROJECTOR_LOG)
    vhost = amqp_url.rsplit("/", 1)[1]
    running: Running = start_projector(read_engine, amqp_url)
    sql(databases.read_name, "ALTER TABLE buy_order_view RENAME TO buy_order_view_away")
    place_and_relay(write_engine, amqp_url, 3)
    wait_until(lambda: queue_counts(amqp_url)[rabbitmq.QUEUE] == (0, 3), 30, 0.2, "the events to be held")
    # Every reconnect returns the held events: one delivery more each time.
    for round_ in range(rabbitmq.DELIVERY_LIMIT + 3):
        connected = log_events(caplog, "broker_connected")
        for pid in worker_connections(vhost):
            rabbitmqctl("close_connection", pid, f"reconnect {round_}")
        wait_until(lambda c=connected: log_events(caplog, "broker_connected") > c, 30, 0.05, "a reconnect")
        wait_until(lambda: running.projector._read_model_outage.attempts > 0, 30, 0.05, "the events held again")
    assert log_events(caplog, "events_renewed") >= 1, f"events returned {WORN_DELIVERIES} times are renewed"
    sql(databases.read_name, "ALTER TABLE buy_order_view_away RENAME TO buy_order_view")
    wait_until(lambda: projected(read_engine) == 3, 60, 0.1, "the held events to be projected")
    wait_until(lambda: queue_counts(amqp_url)[rabbitmq.QUEUE] == (0, 0), 15, 0.2, "every event to be settled")
    assert queue_counts(amqp_url)[rabbitmq.DEAD_LETTER_QUEUE] == (0, 0), "no valid event reached the limit"
    assert log_events(caplog, "event_dead_lettered") == 0
    assert running.alive() and not running.failure
