"""The admin CLI against real databases and a real broker: what an operator would run."""

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pika
import pytest
from sqlalchemy import Engine, text

from btc_orders.adapters import rabbitmq
from btc_orders.services.outbox_relay.relay import Relay
from tests.support.services import Databases, base_env
from tests.support.urls import broker_list, multi_host
from tests.support.workers import store_orders


def admin(
    databases: Databases, amqp_url: str, *args: str, cwd: Path, multi_host_urls: bool = False
) -> subprocess.CompletedProcess[str]:
    write_url, read_url = databases.write_url, databases.read_url
    if multi_host_urls:
        write_url, read_url = multi_host(write_url), multi_host(read_url)
    env = base_env(WRITE_MODEL_DB_URL=write_url, READ_MODEL_DB_URL=read_url, AMQP_URL=amqp_url)
    return subprocess.run(
        [sys.executable, "-m", "btc_orders.admin", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def place_orders(write_engine: Engine, count: int) -> None:
    for index in range(count):
        store_orders(write_engine, 1, "EUR", Decimal(f"{index + 1}.25"), Decimal("91234.56"), [f"admin-{index}"])


def bulk_orders(write_engine: Engine, count: int) -> None:
    with write_engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount)
                SELECT gen_random_uuid(), gen_random_uuid(), (ARRAY['EUR','GBP','USD'])[1 + s % 3],
                       (s % 1000 + 1) * 1.01, 97012.34 + s % 7, 0.00001000 + s % 97 * 0.00000001
                FROM generate_series(1, :count) AS s
                """
            ),
            {"count": count},
        )


def fingerprint(engine: Engine, table: str, cast: str) -> str:
    with engine.connect() as connection:
        return str(
            connection.execute(
                text(
                    f"SELECT md5(string_agg(concat_ws('|', sequence, id, created_at, currency, amount{cast},"
                    f" exchange_rate{cast}, bitcoin_amount{cast}, idempotence_key), ',' ORDER BY sequence))"
                    f" FROM {table}"
                )
            ).scalar_one()
        )


def test_help_reads_well_and_names_every_command(databases: Databases, tmp_path: Path) -> None:
    result = admin(databases, "amqp://guest:guest@127.0.0.1:5672/%2F", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("status", "reconcile", "rebuild-read-model", "replay-dead-letters", "outbox", "exit codes"):
        assert command in result.stdout


def test_status_reports_cap_outbox_queues_and_lag(
    databases: Databases, write_engine: Engine, amqp_url: str, tmp_path: Path
) -> None:
    place_orders(write_engine, 3)
    result = admin(databases, amqp_url, "status", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["cap_btc"] == "100.00000000"
    assert Decimal(status["cap_used_btc"]) == Decimal(status["cap_btc"]) - Decimal(status["cap_remaining_btc"]) > 0
    assert status["outbox_backlog"] == 3
    assert status["read_model_lag"] == 3
    assert (status["queue_depth"], status["dead_letter_depth"]) == (0, 0)
    text_form = admin(databases, amqp_url, "status", cwd=tmp_path)
    assert "outbox backlog" in text_form.stdout


def test_status_reaches_multi_host_databases_and_a_broker_list(
    databases: Databases, write_engine: Engine, amqp_url: str, tmp_path: Path
) -> None:
    place_orders(write_engine, 2)
    result = admin(databases, broker_list(amqp_url), "status", "--json", cwd=tmp_path, multi_host_urls=True)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert (status["outbox_backlog"], status["read_model_lag"], status["queue_depth"]) == (2, 2, 0)


def test_an_unreachable_broker_exits_3(databases: Databases, tmp_path: Path) -> None:
    result = admin(databases, "amqp://guest:guest@127.0.0.1:1/%2F", "status", cwd=tmp_path)
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("a backing service is unreachable:")
    assert lines[0].endswith("(AMQP_URL=amqp://guest:***@127.0.0.1:1/%2F)"), "the broker named, its URL masked"


def test_reconcile_finds_missing_differing_and_extra_rows_and_repairs_them(
    databases: Databases, write_engine: Engine, read_engine: Engine, amqp_url: str, tmp_path: Path
) -> None:
    bulk_orders(write_engine, 50)
    assert admin(databases, amqp_url, "rebuild-read-model", cwd=tmp_path).returncode == 0
    with read_engine.begin() as connection:
        connection.execute(text("DELETE FROM buy_order_view WHERE sequence IN (3, 40)"))
        connection.execute(text("UPDATE buy_order_view SET amount = '0.01' WHERE sequence = 7"))
        connection.execute(
            text(
                "INSERT INTO buy_order_view SELECT 999, gen_random_uuid(), now(), 'USD', '1.00', '1', '1',"
                " gen_random_uuid(), gen_random_uuid()"
            )
        )
    found = admin(databases, amqp_url, "reconcile", "--chunk", "8", cwd=tmp_path)
    assert found.returncode == 1
    assert "missing in the read model: 2 (sequences 3, 40)" in found.stdout
    assert "differing in the read model: 1 (sequences 7)" in found.stdout
    assert "extra in the read model: 1 (sequences 999)" in found.stdout
    repaired = admin(databases, amqp_url, "reconcile", "--repair", cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    again = admin(databases, amqp_url, "reconcile", cwd=tmp_path)
    assert again.returncode == 0
    assert "the read model equals the write model" in again.stdout


@pytest.mark.slow
def test_rebuilding_100000_orders_ends_identical_to_the_write_model(
    databases: Databases, write_engine: Engine, read_engine: Engine, amqp_url: str, tmp_path: Path
) -> None:
    bulk_orders(write_engine, 100_000)
    result = admin(databases, amqp_url, "rebuild-read-model", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "rebuilt 100000 read-model rows from 100000 orders" in result.stdout
    assert "order" in result.stderr  # the progress bar, with its rate
    assert fingerprint(read_engine, "buy_order_view", "") == fingerprint(write_engine, "buy_order", "::text")


def test_dead_letters_can_be_printed_then_moved_back(databases: Databases, amqp_url: str, tmp_path: Path) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    rabbitmq.declare_topology(channel)
    channel.confirm_delivery()  # each one in the queue before the command looks
    for index in range(3):
        channel.basic_publish(rabbitmq.DEAD_LETTER_EXCHANGE, "", f"poison {index}".encode())
    connection.close()

    printed = admin(databases, amqp_url, "replay-dead-letters", "--print", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    assert [json.loads(line)["body"] for line in printed.stdout.splitlines()] == ["poison 0", "poison 1", "poison 2"]
    moved = admin(databases, amqp_url, "replay-dead-letters", cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert "moved back 3 dead letter(s)" in moved.stderr
    status = json.loads(admin(databases, amqp_url, "status", "--json", cwd=tmp_path).stdout)
    assert (status["queue_depth"], status["dead_letter_depth"]) == (3, 0)


def test_outbox_rows_can_be_listed_sent_and_sent_again(
    databases: Databases, write_engine: Engine, amqp_url: str, tmp_path: Path
) -> None:
    place_orders(write_engine, 4)
    listed = admin(databases, amqp_url, "outbox", "list", cwd=tmp_path)
    assert listed.stdout.count("sequence ") == 4
    assert "request admin-0" in listed.stdout
    sent = admin(databases, amqp_url, "outbox", "resend", cwd=tmp_path)
    assert sent.returncode == 0 and "published 4 event(s)" in sent.stderr
    again = admin(databases, amqp_url, "outbox", "resend", "--from-sequence", "3", cwd=tmp_path)
    assert "marked 2 event(s) unsent" in again.stderr
    relay = Relay(write_engine, amqp_url)
    assert relay.relay_once() == 2
    relay.close()
    status = json.loads(admin(databases, amqp_url, "status", "--json", cwd=tmp_path).stdout)
    assert (status["outbox_backlog"], status["queue_depth"]) == (0, 6)
