"""Dead letters and the queue topology: print, move back and migrate, without counting a delivery.

Quorum queues count every return of a message towards its delivery limit (RabbitMQ 4.0
counts a channel closed with the message unacked as a return too). So nothing here ever
returns a message: messages are taken in chunks whose size is the consumer's prefetch
window (the broker sends no more than is kept; `basic.qos` takes at most 65,535), the
consumer is cancelled while they are all still unacked, copies are published and
confirmed, and only then are the originals acked. `--print` moves each dead letter to
the back of its own queue that way, a fresh message with no delivery counted. A crash
in between leaves a copy and the original: a duplicate, never a loss.
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from btc_orders.adapters import rabbitmq

CHUNK = 1000
QUIET_SECONDS = 2.0  # a chunk that gets nothing new for this long is taken as it is
NOT_FOUND = 404


@dataclass(frozen=True, slots=True)
class Delivery:
    method: Basic.Deliver
    properties: BasicProperties
    body: bytes


@dataclass
class Broker:
    connection: pika.BlockingConnection
    channel: BlockingChannel
    publisher: rabbitmq.ConfirmingPublisher

    def depth(self, queue: str) -> int:
        count: int = self.channel.queue_declare(queue, passive=True).method.message_count
        return count

    def move(
        self,
        source: str,
        count: int,
        copy: Callable[[Delivery], rabbitmq.Message],
        moved: Callable[[list[Delivery]], None] = lambda _chunk: None,
    ) -> int:
        """Move up to `count` messages from `source`, each as `copy` makes it; return how many."""
        done = 0
        while done < count:
            chunk = self._take(source, min(CHUNK, count - done))
            if not chunk:
                break
            self.publisher.publish([copy(delivery) for delivery in chunk])
            self.channel.basic_ack(chunk[-1].method.delivery_tag, multiple=True)
            moved(chunk)
            done += len(chunk)
        return done

    def _take(self, queue: str, size: int) -> list[Delivery]:
        taken: list[Delivery] = []
        self.channel.basic_qos(prefetch_count=size)
        tag = self.channel.basic_consume(
            queue, lambda _channel, method, properties, body: taken.append(Delivery(method, properties, body))
        )
        quiet_since, seen = time.monotonic(), 0
        while len(taken) < size and time.monotonic() - quiet_since < QUIET_SECONDS:
            self.connection.process_data_events(time_limit=0.1)
            if len(taken) > seen:
                quiet_since, seen = time.monotonic(), len(taken)
        self.channel.basic_cancel(tag)  # before any ack: the window cannot refill, nothing is returned
        return taken


@contextmanager
def broker(amqp_url: str) -> Iterator[Broker]:
    connection, broker = rabbitmq.connect(amqp_url, "admin")
    publisher = rabbitmq.ConfirmingPublisher(broker, "admin")  # the broker the consumer landed on
    try:
        channel = rabbitmq.declare_topology(connection.channel())
        publisher.open()
        yield Broker(connection, channel, publisher)
    finally:
        publisher.close()
        if connection.is_open:
            connection.close()


def fresh(properties: BasicProperties) -> BasicProperties:
    """The same properties without the queue's own delivery count."""
    headers = {key: value for key, value in (properties.headers or {}).items() if key != "x-delivery-count"}
    properties.headers = headers or None
    return properties


def to_queue(queue: str) -> Callable[[Delivery], rabbitmq.Message]:
    """Copies straight into `queue` (the default exchange routes by queue name)."""
    return lambda delivery: rabbitmq.Message(queue, delivery.body, fresh(delivery.properties), exchange="")


def to_events_exchange(delivery: Delivery) -> rabbitmq.Message:
    return rabbitmq.Message(rabbitmq.ROUTING_KEY, delivery.body, fresh(delivery.properties))


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    arguments: dict[str, object]
    bindings: tuple[tuple[str, str], ...]  # (exchange, routing key)


TOPOLOGY = (
    QueueSpec(rabbitmq.DEAD_LETTER_QUEUE, rabbitmq.DEAD_LETTER_QUEUE_ARGUMENTS, ((rabbitmq.DEAD_LETTER_EXCHANGE, ""),)),
    QueueSpec(rabbitmq.QUEUE, rabbitmq.QUEUE_ARGUMENTS, ((rabbitmq.EXCHANGE, rabbitmq.ROUTING_KEY),)),
)


def migrate(broker: Broker, spec: QueueSpec, say: Callable[[str], None]) -> None:
    """Redeclare `spec.name` with its current arguments, keeping every message.

    A holding queue declared the new way takes the bindings (so new messages land there),
    the old queue is emptied into it, deleted and declared again the new way, and the
    holding queue is emptied back and deleted. Run again after an interruption, it picks up
    where it stopped.
    """
    holding = f"{spec.name}.migrating"
    consumers = broker.channel.queue_declare(spec.name, passive=True).method.consumer_count
    if consumers:
        raise RuntimeError(f"{spec.name} has {consumers} consumer(s)")
    broker.channel, current = rabbitmq.queue_is_current(broker.channel, spec.name, spec.arguments)
    if not current:
        broker.channel.queue_declare(holding, durable=True, arguments=spec.arguments)
        for exchange, key in spec.bindings:
            broker.channel.queue_bind(holding, exchange, routing_key=key)
            broker.channel.queue_unbind(spec.name, exchange, routing_key=key)
        moved = _empty(broker, spec.name, holding)
        _delete_if_empty(broker, spec.name)
        broker.channel.queue_declare(spec.name, durable=True, arguments=spec.arguments)
        say(f"{spec.name}: redeclared with {spec.arguments} ({moved} message(s) kept in {holding} meanwhile)")
    for exchange, key in spec.bindings:
        broker.channel.queue_bind(spec.name, exchange, routing_key=key)
    if not _exists(broker, holding):
        if current:
            say(f"{spec.name}: already declared as this version declares it")
        return
    for exchange, key in spec.bindings:
        broker.channel.queue_unbind(holding, exchange, routing_key=key)
    back = _empty(broker, holding, spec.name)
    _delete_if_empty(broker, holding)
    say(f"{spec.name}: {back} message(s) moved back from {holding}; {holding} deleted")


def _empty(broker: Broker, source: str, destination: str) -> int:
    moved = 0
    while depth := broker.depth(source):
        step = broker.move(source, depth, to_queue(destination))
        if not step:
            raise RuntimeError(f"{source} holds {depth} message(s) that could not be taken (another consumer?)")
        moved += step
    return moved


def _delete_if_empty(broker: Broker, queue: str) -> None:
    """Quorum queues refuse `queue.delete(if_empty)`: check first that nothing is left in it.

    (Its consumers were checked at the start; ours, just cancelled, may still be counted a moment.)
    """
    left = broker.depth(queue)
    if left:
        raise RuntimeError(f"{queue} still has {left} message(s)")
    broker.channel.queue_delete(queue)


def _exists(broker: Broker, queue: str) -> bool:
    try:
        broker.channel.queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code != NOT_FOUND:
            raise
        broker.channel = broker.connection.channel()
        return False
