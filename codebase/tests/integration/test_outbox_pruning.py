"""Sent outbox rows are pruned after the retention period; unsent rows never are.

Pruning runs in the relay in small batches (`SKIP LOCKED`), so several relays prune side by
side, and `admin outbox resend --from-sequence` marking rows unsent meanwhile neither waits
for a prune nor resends a pruned row as if it were missing: it says so.
"""

import subprocess
import sys
import threading
import uuid
from pathlib import Path

from sqlalchemy import Engine, text

from btc_orders.services.outbox_relay import relay as relay_module
from btc_orders.services.outbox_relay.relay import Relay
from tests.support.services import Databases, base_env, wait_until
from tests.support.workers import start_relay, store_orders


def place(write_engine: Engine, count: int) -> None:
    store_orders(write_engine, count)


def outbox(write_engine: Engine) -> tuple[int, int]:
    """(sent rows, unsent rows)."""
    with write_engine.connect() as connection:
        row = connection.execute(
            text("SELECT count(sent_at), count(*) FILTER (WHERE sent_at IS NULL) FROM outbox")
        ).one()
    return int(row[0]), int(row[1])


def age_sent_rows(write_engine: Engine, seconds: int, up_to_sequence: int | None = None) -> None:
    with write_engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE outbox SET sent_at = sent_at - make_interval(secs => :seconds)"
                " WHERE sent_at IS NOT NULL AND (CAST(:upto AS bigint) IS NULL OR order_sequence <= :upto)"
            ),
            {"seconds": seconds, "upto": up_to_sequence},
        )


def test_rows_sent_longer_ago_than_the_retention_are_pruned_and_no_other(write_engine: Engine, amqp_url: str) -> None:
    place(write_engine, 30)
    relay = Relay(write_engine, amqp_url, retention_seconds=3600)
    assert relay.relay_once() == 30
    place(write_engine, 5)  # unsent: never pruned, however old
    with write_engine.begin() as connection:
        connection.execute(text("UPDATE outbox SET created_at = created_at - interval '30 days' WHERE sent_at IS NULL"))
    age_sent_rows(write_engine, 7200, up_to_sequence=20)  # 20 rows sent two hours ago
    assert relay.prune() == 20
    assert outbox(write_engine) == (10, 5)
    assert relay.prune() == 0
    relay.close()


def test_several_relays_prune_a_large_backlog_side_by_side_in_small_batches(
    write_engine: Engine, amqp_url: str, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(relay_module, "PRUNE_BATCH", 50)
    with write_engine.begin() as connection:
        connection.execute(
            text(
                """
                WITH orders AS (
                    INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount)
                    SELECT gen_random_uuid(), gen_random_uuid(), 'USD', 1.00, 90000, 0.00001111
                    FROM generate_series(1, 3000)
                    RETURNING sequence
                )
                INSERT INTO outbox (event_id, order_sequence, routing_key, payload, sent_at)
                SELECT gen_random_uuid(), sequence, 'buy_order.created', '{}', now() - interval '8 days'
                FROM orders
                """
            )
        )
    relays = [Relay(write_engine, amqp_url, retention_seconds=7 * 24 * 3600) for _ in range(3)]
    pruned = [0, 0, 0]

    def prune(index: int) -> None:
        while step := relays[index].prune():
            pruned[index] += step

    threads = [threading.Thread(target=prune, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(pruned) == 3000, "each row deleted once, whichever relay got it"
    assert outbox(write_engine) == (0, 0)


def test_resend_from_a_sequence_says_which_events_were_pruned(
    databases: Databases, write_engine: Engine, amqp_url: str, tmp_path: Path
) -> None:
    place(write_engine, 10)
    relay = Relay(write_engine, amqp_url, retention_seconds=3600)
    assert relay.relay_once() == 10
    age_sent_rows(write_engine, 7200, up_to_sequence=4)
    assert relay.prune() == 4
    relay.close()
    env = base_env(WRITE_MODEL_DB_URL=databases.write_url, READ_MODEL_DB_URL=databases.read_url, AMQP_URL=amqp_url)
    result = subprocess.run(
        [sys.executable, "-m", "btc_orders.admin", "outbox", "resend", "--from-sequence", "3"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, "a problem found and not repaired"
    assert "marked 6 event(s) unsent" in result.stderr
    assert "2 order(s) from sequence 3 on have no outbox event any more" in result.stderr
    assert "reconcile --repair" in result.stderr
    assert outbox(write_engine) == (0, 6)


def test_the_running_relay_prunes_on_its_own(write_engine: Engine, amqp_url: str) -> None:
    place(write_engine, 12)
    relay = Relay(write_engine, amqp_url, retention_seconds=3600)
    stop, thread = start_relay(relay)
    try:
        wait_until(lambda: outbox(write_engine) == (12, 0), 30, 0.1, "the rows to be sent")
        age_sent_rows(write_engine, 7200)
        wait_until(lambda: outbox(write_engine) == (0, 0), 30, 0.1, "the relay to prune them")
    finally:
        stop.set()
        thread.join(30)


def test_a_prune_the_database_refuses_never_stops_the_relaying(
    databases: Databases, write_engine: Engine, amqp_url: str, caplog
) -> None:  # type: ignore[no-untyped-def]
    import logging

    from btc_orders.adapters import db
    from tests.support.services import sql
    from tests.support.workers import log_events

    role = f"relay_{uuid.uuid4().hex[:8]}"
    sql("postgres", f"CREATE ROLE {role} LOGIN")
    sql(databases.write_name, f"GRANT SELECT, UPDATE ON outbox TO {role}", f"GRANT SELECT ON buy_order TO {role}")
    engine = db.create_engine(databases.write_url.replace("postgres@", f"{role}@", 1), 2)
    caplog.set_level(logging.INFO, logger="btc_orders.services.outbox_relay.relay")
    relay = Relay(engine, amqp_url, retention_seconds=60)
    stop, thread = start_relay(relay)
    try:
        place(write_engine, 3)
        wait_until(lambda: outbox(write_engine) == (3, 0), 30, 0.1, "the rows to be sent")
        age_sent_rows(write_engine, 7200)
        wait_until(
            lambda: log_events(caplog, "outbox_prune_failed", "btc_orders.services.outbox_relay.relay") == 1,
            30,
            0.1,
            "the refused prune to be logged",
        )
        place(write_engine, 4)
        wait_until(lambda: outbox(write_engine) == (7, 0), 30, 0.1, "the relay to go on sending")
        assert log_events(caplog, "outbox_prune_failed", "btc_orders.services.outbox_relay.relay") == 1
        assert log_events(caplog, "relay_retrying", "btc_orders.services.outbox_relay.relay") == 0
    finally:
        stop.set()
        thread.join(30)
        engine.dispose()
        sql(databases.write_name, f"DROP OWNED BY {role}")
        sql("postgres", f"DROP ROLE {role}")
