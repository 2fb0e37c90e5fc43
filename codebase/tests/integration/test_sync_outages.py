"""read_model_sync: an outage of the read model is a wait, never a dead letter (SPEC 6).

Valid events meet a read model that is read-only (a failover), has lost the worker's
privilege, or has lost its table: none is acked, none dead-lettered, one log event says the
outage began; once it is repaired every event is projected and the dead letters are empty.
"""

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, text

from btc_orders.adapters import db, rabbitmq
from tests.support.services import Databases, publish_confirmed, sql, wait_until
from tests.support.workers import (
    PROJECTOR_LOG,
    Running,
    log_events,
    place_and_relay,
    projected,
    queue_counts,
)


def terminate_backends(database: str) -> str:
    return (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    )


@dataclass
class Fault:
    engine: Engine
    break_it: Callable[[], None]
    repair: Callable[[], None]


@pytest.fixture(params=["read-only", "privilege revoked", "table renamed"])
def fault(request: pytest.FixtureRequest, databases: Databases) -> Iterator[Fault]:
    name = databases.read_name
    if request.param == "read-only":  # what a failover to a standby looks like: SQLSTATE 25006
        engine = db.create_engine(databases.read_url, 2, "read_model_sync")
        yield Fault(
            engine,
            lambda: sql(
                "postgres", f"ALTER DATABASE {name} SET default_transaction_read_only = on", terminate_backends(name)
            ),
            lambda: sql(
                "postgres", f"ALTER DATABASE {name} RESET default_transaction_read_only", terminate_backends(name)
            ),
        )
    elif request.param == "privilege revoked":  # SQLSTATE 42501, the worker connecting as its own role
        role = f"sync_{uuid.uuid4().hex[:8]}"
        sql("postgres", f"CREATE ROLE {role} LOGIN")
        # What the worker's role needs: the view's rows, and the disorder bound its trigger keeps.
        sql(name, f"GRANT SELECT, INSERT ON buy_order_view TO {role}")
        sql(name, f"GRANT SELECT, UPDATE ON buy_order_view_disorder TO {role}")
        engine = db.create_engine(databases.read_url.replace("postgres@", f"{role}@", 1), 2, "read_model_sync")
        yield Fault(
            engine,
            lambda: sql(name, f"REVOKE INSERT ON buy_order_view FROM {role}"),
            lambda: sql(name, f"GRANT INSERT ON buy_order_view TO {role}"),
        )
        engine.dispose()
        sql(name, terminate_backends(name), f"DROP OWNED BY {role}")
        sql("postgres", f"DROP ROLE {role}")
    else:  # SQLSTATE 42P01
        engine = db.create_engine(databases.read_url, 2, "read_model_sync")
        yield Fault(
            engine,
            lambda: sql(name, "ALTER TABLE buy_order_view RENAME TO buy_order_view_away"),
            lambda: sql(name, "ALTER TABLE buy_order_view_away RENAME TO buy_order_view"),
        )
    engine.dispose()


def test_an_outage_of_the_read_model_holds_valid_events_and_dead_letters_none(
    fault: Fault,
    write_engine: Engine,
    read_engine: Engine,
    amqp_url: str,
    start_projector: Callable[[Engine, str], Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=PROJECTOR_LOG)
    running = start_projector(fault.engine, amqp_url)
    place_and_relay(write_engine, amqp_url, 5)
    wait_until(lambda: projected(read_engine) == 5, 30, 0.1, "the first events to be projected")

    fault.break_it()
    place_and_relay(write_engine, amqp_url, 7)
    outage = running.projector._read_model_outage
    wait_until(lambda: outage.attempts >= 4, 60, 0.1, "several retries against the broken read model")
    # (the broker's figures lag a little behind)
    wait_until(lambda: queue_counts(amqp_url)[rabbitmq.QUEUE] == (0, 7), 15, 0.2, "7 events held unacked")
    wait_until(lambda: outage.attempts >= 8, 60, 0.1, "more retries")
    counts = queue_counts(amqp_url)
    assert counts[rabbitmq.DEAD_LETTER_QUEUE] == (0, 0), "no valid event is dead-lettered during an outage"
    assert counts[rabbitmq.QUEUE] == (0, 7), "the 7 events are held unacked, neither returned nor acked"
    assert log_events(caplog, "read_model_unavailable") == 1, "one log event when the outage begins"
    assert log_events(caplog, "event_dead_lettered") == 0

    fault.repair()
    wait_until(lambda: projected(read_engine) == 12, 60, 0.1, "every event to be projected after the repair")
    wait_until(lambda: queue_counts(amqp_url)[rabbitmq.QUEUE] == (0, 0), 10, 0.1, "every event to be acked")
    assert queue_counts(amqp_url)[rabbitmq.DEAD_LETTER_QUEUE] == (0, 0)
    assert log_events(caplog, "read_model_unavailable") == 1
    assert log_events(caplog, "read_model_available") == 1, "one log event when it ends"
    assert running.alive() and not running.failure


def clash_with(order_id: str) -> bytes:
    """Valid by the schema, refused by the read model for its own content: another sequence, same order id."""
    return json.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "type": "buy_order.created",
            "version": 1,
            "occurred_at": "2026-01-01T00:00:00.000000Z",
            "request_id": None,
            "order": {
                "id": order_id,
                "sequence": 10**9,
                "created_at": "2026-01-01T00:00:00.000000Z",
                "currency": "USD",
                "amount": "1.00",
                "exchange_rate": "97012.34",
                "bitcoin_amount": "0.00001031",
                "idempotence_key": str(uuid.uuid4()),
            },
        }
    ).encode()


def test_the_database_failing_while_a_refused_batch_is_replayed_one_by_one_is_an_outage(
    databases: Databases,
    write_engine: Engine,
    read_engine: Engine,
    amqp_url: str,
    start_projector: Callable[[Engine, str], Running],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=PROJECTOR_LOG)
    # Order 1, then an event clashing with it, then orders 2..4, all waiting in the queue.
    place_and_relay(write_engine, amqp_url, 1)
    with write_engine.connect() as connection:
        first_id = str(connection.execute(text("SELECT id FROM buy_order WHERE sequence = 1")).scalar_one())
    publish_confirmed(amqp_url, rabbitmq.EXCHANGE, rabbitmq.ROUTING_KEY, [clash_with(first_id)])
    place_and_relay(write_engine, amqp_url, 3)
    # The batch fails on the clash (a unique violation: poison) before order 2 is reached; replayed
    # one by one, order 2's insert then loses its connection (the server ends the session), once.
    sql(
        databases.read_name,
        "CREATE SEQUENCE fault_shots",
        """
        CREATE FUNCTION cut_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.sequence = 2 AND nextval('fault_shots') = 1 THEN
                PERFORM pg_terminate_backend(pg_backend_pid());
            END IF;
            RETURN NEW;
        END $$
        """,
        "CREATE TRIGGER cut_once BEFORE INSERT ON buy_order_view FOR EACH ROW EXECUTE FUNCTION cut_once()",
    )
    running = start_projector(db.create_engine(databases.read_url, 2, "read_model_sync"), amqp_url)

    wait_until(lambda: projected(read_engine) == 4, 60, 0.1, "the four valid events to be projected")
    wait_until(lambda: queue_counts(amqp_url)[rabbitmq.QUEUE] == (0, 0), 10, 0.1, "every event to be settled")
    wait_until(lambda: queue_counts(amqp_url)[rabbitmq.DEAD_LETTER_QUEUE] == (1, 0), 15, 0.2, "one dead letter")
    with read_engine.connect() as connection:
        assert connection.execute(text("SELECT last_value FROM fault_shots")).scalar_one() >= 1, "the cut happened"
    assert log_events(caplog, "event_dead_lettered") == 1, "only the clashing event is dead"
    assert log_events(caplog, "read_model_unavailable") == 1
    assert running.alive() and not running.failure, "the worker survived the outage during the replay"
