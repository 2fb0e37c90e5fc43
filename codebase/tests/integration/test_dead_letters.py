"""Dead letters are kept until an operator acts, and looking at them counts no delivery.

Quorum queues count every return of a message and drop or dead-letter it past the delivery
limit (20 by default on RabbitMQ 4). `replay-dead-letters --print` moves each dead letter to
the back of its queue as a fresh copy instead of returning it; large queues are taken in
chunks (a consumer's prefetch is at most 65,535); and a queue an older version declared with
other arguments is used as it is, then migrated with `migrate-topology` without losing any.
"""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pika
import pytest

from btc_orders.adapters import rabbitmq
from tests.support.services import Databases, base_env, publish_confirmed, rabbitmqctl, wait_until


def admin(databases: Databases, amqp_url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = base_env(WRITE_MODEL_DB_URL=databases.write_url, READ_MODEL_DB_URL=databases.read_url, AMQP_URL=amqp_url)
    return subprocess.run(
        [sys.executable, "-m", "btc_orders.admin", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def dead_letter(amqp_url: str, bodies: list[bytes]) -> None:
    """Real dead letters: published to the main queue, then rejected by a consumer."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = rabbitmq.declare_topology(connection.channel())
    publish_confirmed(amqp_url, rabbitmq.EXCHANGE, rabbitmq.ROUTING_KEY, bodies)
    for _ in bodies:
        method = None
        while method is None:
            method, _properties, _body = channel.basic_get(rabbitmq.QUEUE)
        channel.basic_nack(method.delivery_tag, requeue=False)
    connection.close()
    wait_until(lambda: depth(amqp_url, rabbitmq.DEAD_LETTER_QUEUE) == len(bodies), 20, 0.1, "the dead letters")


def depth(amqp_url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def peek_delivery_counts(amqp_url: str, queue: str) -> list[object]:
    """Each message's count of earlier deliveries, then every message acked back... by closing (test only)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    counts = []
    while True:
        method, properties, _body = channel.basic_get(queue)
        if method is None:
            break
        counts.append((properties.headers or {}).get("x-delivery-count", 0))
    connection.close()
    return counts


def test_printing_dead_letters_again_and_again_counts_no_delivery(
    databases: Databases, amqp_url: str, tmp_path: Path
) -> None:
    dead_letter(amqp_url, [b"poison 0", b"poison 1", b"poison 2"])
    for _ in range(5):
        printed = admin(databases, amqp_url, "replay-dead-letters", "--print", cwd=tmp_path)
        assert printed.returncode == 0, printed.stderr
        lines = [json.loads(line) for line in printed.stdout.splitlines()]
        assert [line["body"] for line in lines] == ["poison 0", "poison 1", "poison 2"], "all kept, in order"
        assert {line["reason"] for line in lines} == {"rejected"}, "the dead-lettering headers are kept"
    assert peek_delivery_counts(amqp_url, rabbitmq.DEAD_LETTER_QUEUE) == [0, 0, 0]


@pytest.mark.slow
def test_more_dead_letters_than_a_prefetch_can_name_are_moved_back(
    databases: Databases, amqp_url: str, tmp_path: Path
) -> None:
    count = 70_000  # basic.qos takes a prefetch of at most 65,535
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = rabbitmq.declare_topology(connection.channel())
    for index in range(count):
        channel.basic_publish(rabbitmq.DEAD_LETTER_EXCHANGE, "", b"dead %d" % index)
    connection.close()
    wait_until(lambda: depth(amqp_url, rabbitmq.DEAD_LETTER_QUEUE) == count, 120, 0.5, "70,000 dead letters")
    moved = admin(databases, amqp_url, "replay-dead-letters", cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr[-2000:]
    assert f"moved back {count} dead letter(s)" in moved.stderr
    wait_until(lambda: depth(amqp_url, rabbitmq.QUEUE) == count, 60, 0.5, "all of them in the main queue")
    assert depth(amqp_url, rabbitmq.DEAD_LETTER_QUEUE) == 0


def declare_as_the_previous_version(amqp_url: str) -> None:
    """The topology as the previous release declared it: dead letters in a quorum queue with no limit."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.exchange_declare(rabbitmq.EXCHANGE, exchange_type="topic", durable=True)
    channel.exchange_declare(rabbitmq.DEAD_LETTER_EXCHANGE, exchange_type="fanout", durable=True)
    channel.queue_declare(rabbitmq.DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_bind(rabbitmq.DEAD_LETTER_QUEUE, rabbitmq.DEAD_LETTER_EXCHANGE)
    channel.queue_declare(rabbitmq.QUEUE, durable=True, arguments=rabbitmq.QUEUE_ARGUMENTS)
    channel.queue_bind(rabbitmq.QUEUE, rabbitmq.EXCHANGE, routing_key=rabbitmq.ROUTING_KEY)
    connection.close()


def dead_letter_queue_is_current(amqp_url: str) -> bool:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        _channel, current = rabbitmq.queue_is_current(
            connection.channel(), rabbitmq.DEAD_LETTER_QUEUE, rabbitmq.DEAD_LETTER_QUEUE_ARGUMENTS
        )
        return current
    finally:
        connection.close()


def test_an_outdated_queue_is_used_as_it_is_with_one_line_saying_how_to_migrate(
    amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    declare_as_the_previous_version(amqp_url)
    caplog.set_level(logging.WARNING, logger="btc_orders.adapters.rabbitmq")
    rabbitmq._warned_outdated.clear()
    for _ in range(3):
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = rabbitmq.declare_topology(connection.channel())
        assert channel.is_open
        channel.basic_publish(rabbitmq.EXCHANGE, rabbitmq.ROUTING_KEY, b"{}")  # the topology works
        connection.close()
    warnings = [record for record in caplog.records if record.getMessage() == "topology_outdated"]
    assert len(warnings) == 1, "one line per process, not one per connection"
    assert "migrate-topology" in warnings[0].event_fields["action"]  # type: ignore[attr-defined]


def test_migrating_the_topology_keeps_every_dead_letter_and_is_idempotent(
    databases: Databases, amqp_url: str, tmp_path: Path
) -> None:
    declare_as_the_previous_version(amqp_url)
    dead_letter(amqp_url, [b"old %d" % index for index in range(5)])
    assert not dead_letter_queue_is_current(amqp_url)
    status = admin(databases, amqp_url, "status", "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["dead_letter_depth"] == 5, "an outdated queue is still served"

    migrated = admin(databases, amqp_url, "migrate-topology", cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert f"{rabbitmq.DEAD_LETTER_QUEUE}: redeclared" in migrated.stdout
    assert dead_letter_queue_is_current(amqp_url)
    printed = admin(databases, amqp_url, "replay-dead-letters", "--print", cwd=tmp_path)
    assert [json.loads(line)["body"] for line in printed.stdout.splitlines()] == [f"old {i}" for i in range(5)]
    vhost = amqp_url.rsplit("/", 1)[1]
    queues = rabbitmqctl("list_queues", "-p", vhost, "name", "--no-table-headers", "-q").split()
    assert sorted(queues) == sorted([rabbitmq.QUEUE, rabbitmq.DEAD_LETTER_QUEUE]), "no holding queue left"

    again = admin(databases, amqp_url, "migrate-topology", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already declared as this version declares it" in again.stdout
    assert depth(amqp_url, rabbitmq.DEAD_LETTER_QUEUE) == 5
