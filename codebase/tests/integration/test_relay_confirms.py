"""The relay publishes a batch, then waits once for the broker's confirms of all of it.

A batch is marked sent only when every message of it was confirmed; a nack (the
queue refuses it) or a return (no queue is bound) leaves the whole batch unsent,
to be published again.
"""

import time
from collections.abc import Iterator

import pika
import pytest
from sqlalchemy import Engine, text

from btc_orders.adapters import rabbitmq
from btc_orders.services.outbox_relay.relay import Relay
from tests.support.services import rabbitmqctl
from tests.support.workers import store_orders


def place_orders(write_engine: Engine, count: int) -> None:
    store_orders(write_engine, count, request_ids=[f"req-{index}" for index in range(count)])


def unsent(write_engine: Engine) -> int:
    with write_engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")).scalar_one())


def queued_message_ids(amqp_url: str) -> list[str]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    ids = []
    while True:
        method, properties, _body = channel.basic_get(rabbitmq.QUEUE, auto_ack=True)
        if method is None:
            break
        ids.append(properties.message_id)
    connection.close()
    return ids


def vhost_of(amqp_url: str) -> str:
    return amqp_url.rsplit("/", 1)[1]


@pytest.fixture
def relay(write_engine: Engine, amqp_url: str) -> Iterator[Relay]:
    relay = Relay(write_engine, amqp_url, batch_size=500)
    yield relay
    relay.close()


def test_batches_are_confirmed_whole_and_every_event_arrives_once(
    write_engine: Engine, amqp_url: str, relay: Relay
) -> None:
    place_orders(write_engine, 1100)
    assert [relay.relay_once() for _ in range(4)] == [500, 500, 100, 0]
    assert unsent(write_engine) == 0
    ids = queued_message_ids(amqp_url)
    assert len(ids) == len(set(ids)) == 1100


def test_a_nacked_batch_stays_unsent_and_is_published_again(write_engine: Engine, amqp_url: str, relay: Relay) -> None:
    vhost = vhost_of(amqp_url)
    # The queue is declared under a policy of at most 30 messages: it refuses (nacks) the rest.
    # Quorum queues apply the limit a little late, so fill the queue until it refuses.
    rabbitmqctl("set_policy", "-p", vhost, "tiny", f"^{rabbitmq.QUEUE}$", '{"max-length": 30}', "--apply-to", "queues")
    filler = rabbitmq.ConfirmingPublisher(amqp_url, "filler")
    filler.open()
    filler_message = rabbitmq.Message(rabbitmq.ROUTING_KEY, b"{}", pika.BasicProperties(message_id="filler"))
    for _ in range(20):
        try:
            filler.publish([filler_message] * 20)
        except rabbitmq.PublishFailed:
            break
    else:
        pytest.fail("the queue never refused a message")
    filler.close()

    place_orders(write_engine, 20)
    with pytest.raises(rabbitmq.PublishFailed, match="rejected"):
        relay.relay_once()
    assert unsent(write_engine) == 20, "a batch the broker did not take whole must stay unsent"

    queued_message_ids(amqp_url)  # a consumer empties the queue: it takes messages again
    deadline = time.monotonic() + 30
    while True:  # the queue leaves its refusing state a moment later
        try:
            assert relay.relay_once() == 20
            break
        except rabbitmq.PublishFailed:
            if time.monotonic() > deadline:
                raise
            queued_message_ids(amqp_url)
            time.sleep(0.2)
    assert unsent(write_engine) == 0
    ids = queued_message_ids(amqp_url)
    assert len(ids) == len(set(ids)) == 20 and "filler" not in ids


def test_an_unroutable_batch_stays_unsent_until_the_binding_is_back(
    write_engine: Engine, amqp_url: str, relay: Relay
) -> None:
    place_orders(write_engine, 5)
    assert relay.relay_once() == 5
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_unbind(rabbitmq.QUEUE, rabbitmq.EXCHANGE, routing_key=rabbitmq.ROUTING_KEY)
    connection.close()

    place_orders(write_engine, 3)
    with pytest.raises(rabbitmq.PublishFailed, match="rejected 3 of 3"):
        relay.relay_once()
    assert unsent(write_engine) == 3

    relay.close()  # as the relay's loop does after a failure: reconnecting declares the topology again
    assert relay.relay_once() == 3
    assert unsent(write_engine) == 0
    assert len(queued_message_ids(amqp_url)) == 8


def test_a_closed_connection_fails_the_batch_and_the_next_round_reconnects(
    write_engine: Engine, amqp_url: str, relay: Relay
) -> None:
    place_orders(write_engine, 2)
    assert relay.relay_once() == 2
    vhost = vhost_of(amqp_url)
    for line in rabbitmqctl("list_connections", "pid", "vhost", "client_properties", "--no-table-headers").splitlines():
        if f"\t{vhost}\t" in line and "outbox_relay" in line:
            rabbitmqctl("close_connection", line.split("\t")[0], "closed by the test")
    place_orders(write_engine, 4)
    with pytest.raises((rabbitmq.PublishFailed, pika.exceptions.AMQPError)):
        relay.relay_once()
    assert unsent(write_engine) == 4
    relay.close()
    assert relay.relay_once() == 4
    assert len(queued_message_ids(amqp_url)) == 6


def relay_connections(vhost: str) -> list[str]:
    lines = rabbitmqctl("list_connections", "vhost", "client_properties", "--no-table-headers").splitlines()
    return [line for line in lines if line.startswith(f"{vhost}\t") and "outbox_relay" in line]


def test_close_ends_the_connection_cleanly(write_engine: Engine, amqp_url: str, relay: Relay) -> None:
    place_orders(write_engine, 1)
    assert relay.relay_once() == 1
    assert len(relay_connections(vhost_of(amqp_url))) == 1
    relay.close()
    assert relay_connections(vhost_of(amqp_url)) == [], "close() returns once the broker has closed the connection"
