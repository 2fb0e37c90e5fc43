"""RabbitMQ: the topology (declared the same way by publisher and consumer) and connections.

- `buy_orders`: durable topic exchange; events are published with routing key
  `buy_order.created`.
- `read_model_sync`: durable quorum queue bound to it. Quorum queues are
  replicated when the broker is clustered, and their delivery limit sends a
  message that keeps killing its consumer to the dead letters instead of
  redelivering it forever. Dead-lettering is at-least-once, so a dead letter is
  never lost either.
- `read_model_sync.dead`: the dead-letter exchange (fanout) and its durable
  quorum queue, declared with a delivery limit no operator will ever reach:
  RabbitMQ 4 gives quorum queues a default limit of 20 and would drop a dead
  letter returned that often, and the value RabbitMQ 4 reads as "unlimited" (-1)
  makes RabbitMQ 3.x drop a message at its first return (measured on 3.10).

A queue whose arguments changed cannot be declared again with the new ones
(`PRECONDITION_FAILED`): `declare_topology` then logs one line and goes on with
the queue as it is; `python -m btc_orders.admin migrate-topology` moves its
messages into a queue declared the new way (docs/operations.md).

Every connection detects a silent network failure in seconds: AMQP heartbeats,
TCP keepalives and `TCP_USER_TIMEOUT` on the socket, bounded connect and
blocked-connection timeouts.

`AMQP_URL` may name several brokers (a cluster's nodes, `;`-separated): a connection goes to the
first that answers, in the list's order, and a process that lost its broker connects again the same
way, so it moves to the next one. The topology is declared wherever it lands.
"""

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pika
import pika.exceptions
import pika.frame
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pika.channel import Channel

from btc_orders import logs, urls

log = logging.getLogger(__name__)


class _OutdatedQueueFilter(logging.Filter):
    """pika warns of the channel an outdated queue closes; `topology_outdated` is the one line said."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "PRECONDITION_FAILED - inequivalent arg" not in record.getMessage()


for _name in ("pika.channel", "pika.adapters.blocking_connection"):
    logging.getLogger(_name).addFilter(_OutdatedQueueFilter())

EXCHANGE = "buy_orders"
ROUTING_KEY = "buy_order.created"
QUEUE = "read_model_sync"
DEAD_LETTER_EXCHANGE = "read_model_sync.dead"
DEAD_LETTER_QUEUE = "read_model_sync.dead"
DELIVERY_LIMIT = 10
# Dead letters stay until an operator acts: no return can plausibly reach this (see the module text).
DEAD_LETTER_DELIVERY_LIMIT = 1_000_000_000
DEAD_LETTER_QUEUE_ARGUMENTS = {"x-queue-type": "quorum", "x-delivery-limit": DEAD_LETTER_DELIVERY_LIMIT}
QUEUE_ARGUMENTS = {
    "x-queue-type": "quorum",
    "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",  # required by at-least-once dead-lettering
    "x-delivery-limit": DELIVERY_LIMIT,
}

# A silent peer (packets dropped, no reset) is found within about two heartbeats.
HEARTBEAT_SECONDS = 10
CONNECT_TIMEOUT_SECONDS = 5
# An idle publisher runs its I/O loop at least this often: well inside a heartbeat interval.
KEEP_ALIVE_SECONDS = 1.0
BLOCKED_CONNECTION_TIMEOUT_SECONDS = 60
TCP_OPTIONS = {
    "TCP_KEEPIDLE": 5,
    "TCP_KEEPINTVL": 2,
    "TCP_KEEPCNT": 3,
    "TCP_USER_TIMEOUT": 15_000,  # ms: written data unacknowledged this long fails the socket
}
PRECONDITION_FAILED = 406
# What a lost or unreachable broker raises. pika lets some connection-workflow failures (a
# handshake that timed out on a silent network) escape as `AMQPConnectorException`, not an
# `AMQPError`.
BROKER_ERRORS: tuple[type[Exception], ...] = (pika.exceptions.AMQPError, AMQPConnectorException, OSError)


# What says a broker did not answer (refused, unreachable, silent, closed on us): the next one of
# the list is tried. `PublishFailed` is a publisher's channel that did not open.
UNANSWERED: tuple[type[Exception], ...] = (pika.exceptions.AMQPConnectionError, AMQPConnectorException, OSError)
T = TypeVar("T")


class NoBrokerAnswered(pika.exceptions.AMQPConnectionError):  # type: ignore[misc]  # pika is untyped
    """Every broker of a list failed to answer (each one's reason is in the message, URLs masked)."""


def connect(amqp_url: str, name: str) -> tuple[pika.BlockingConnection, str]:
    """A blocking connection to the first broker of `amqp_url` that answers, and that broker's URL."""
    return first_answering(amqp_url, name, pika.BlockingConnection)


def first_answering(amqp_url: str, name: str, open_one: Callable[[pika.URLParameters], T]) -> tuple[T, str]:
    """`open_one(parameters)` for each broker of `amqp_url` in turn until one answers: what it
    returned and that broker's URL. One broker's failure is raised as it came; a list's, as
    `NoBrokerAnswered` naming every broker (masked) and why."""
    brokers = urls.elements(amqp_url)
    failures: list[str] = []
    for broker in brokers:
        try:
            return open_one(_parameters(broker, name)), broker
        except _NEXT_BROKER as error:
            if len(brokers) == 1:
                raise
            failures.append(f"{urls.mask(broker)}: {reason(error)}")
    raise NoBrokerAnswered(f"no broker of the {len(brokers)} in AMQP_URL answered: {'; '.join(failures)}")


def reason(error: BaseException) -> str:
    """One line: the error's class and why (pika's connection errors often print as nothing: their
    cause is their argument's `repr`)."""
    text = str(error).strip() or "; ".join(str(argument) or repr(argument) for argument in error.args).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else type(error).__name__}"


def _parameters(amqp_url: str, name: str) -> pika.URLParameters:
    """One broker's connection parameters (`amqp_url`: one URL, not a list)."""
    parameters = pika.URLParameters(amqp_url)
    parameters.heartbeat = HEARTBEAT_SECONDS
    parameters.blocked_connection_timeout = BLOCKED_CONNECTION_TIMEOUT_SECONDS
    parameters.socket_timeout = CONNECT_TIMEOUT_SECONDS
    parameters.stack_timeout = CONNECT_TIMEOUT_SECONDS * 2
    parameters.tcp_options = TCP_OPTIONS
    parameters.connection_attempts = 1
    parameters.client_properties = {"connection_name": name}
    return parameters


def declare_topology(channel: BlockingChannel) -> BlockingChannel:
    """Idempotent: every publisher and consumer declares the same things at start.

    Returns the channel to go on with: a queue an older version declared with other
    arguments is refused by the broker, which closes the channel; it is then used as it
    is, on a new channel, and one line says how to migrate it.
    """
    channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    channel.exchange_declare(DEAD_LETTER_EXCHANGE, exchange_type="fanout", durable=True)
    channel = _declare_queue(channel, DEAD_LETTER_QUEUE, DEAD_LETTER_QUEUE_ARGUMENTS)
    channel.queue_bind(DEAD_LETTER_QUEUE, DEAD_LETTER_EXCHANGE)
    channel = _declare_queue(channel, QUEUE, QUEUE_ARGUMENTS)
    channel.queue_bind(QUEUE, EXCHANGE, routing_key=ROUTING_KEY)
    return channel


def queue_is_current(channel: BlockingChannel, queue: str, arguments: dict[str, Any]) -> tuple[BlockingChannel, bool]:
    """Whether `queue` is declared with `arguments` (declaring it if missing); returns a usable channel."""
    try:
        channel.queue_declare(queue, durable=True, arguments=arguments)
        return channel, True
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code != PRECONDITION_FAILED:
            raise
        return channel.connection.channel(), False


_warned_outdated: set[str] = set()


def _declare_queue(channel: BlockingChannel, queue: str, arguments: dict[str, Any]) -> BlockingChannel:
    channel, current = queue_is_current(channel, queue, arguments)
    if not current:
        channel.queue_declare(queue, passive=True)  # it exists; its messages are kept as they are
        if queue not in _warned_outdated:
            _warned_outdated.add(queue)
            logs.event(
                log,
                "topology_outdated",
                logging.WARNING,
                queue=queue,
                action="run `python -m btc_orders.admin migrate-topology` to redeclare it without losing a message",
            )
    return channel


@dataclass(frozen=True, slots=True)
class Message:
    routing_key: str
    body: bytes
    properties: pika.BasicProperties
    exchange: str = EXCHANGE


class PublishFailed(pika.exceptions.AMQPError):  # type: ignore[misc]  # pika is untyped
    """The broker did not take a whole batch: a nack, an unroutable message, a lost channel or no answer."""


# A publisher's channel that did not open on a broker is a reason to try the next one too.
_NEXT_BROKER: tuple[type[Exception], ...] = (*UNANSWERED, PublishFailed)


class ConfirmingPublisher:
    """Publishes a batch of messages, then waits once for the broker's confirms of all of it.

    pika's `BlockingChannel.basic_publish` on a confirming channel returns only
    after that message's confirm: one broker round trip (a quorum queue's log
    write) per message, which capped the relay at about 600 events/s. Here the
    same library's `SelectConnection` is driven from the calling thread: the
    whole batch is written, then the I/O loop runs until every delivery tag is
    confirmed, or until a nack, an unroutable return (messages are `mandatory`),
    a closed channel or connection, or the deadline, any of which fails the batch
    as a whole (the caller publishes it again; consumers ignore the replays).
    """

    def __init__(self, amqp_url: str, name: str, confirm_timeout_seconds: float = 10.0) -> None:
        self.amqp_url = amqp_url  # one broker or a list: the first that answers is used
        self.name = name
        self.broker = ""  # the URL of the broker the publisher is connected to (unmasked)
        self.confirm_timeout_seconds = confirm_timeout_seconds
        self._connection: pika.SelectConnection | None = None
        self._channel: Channel | None = None
        self._failure: str | None = None
        self._next_tag = 1
        self._unconfirmed: set[int] = set()
        self._rejected = 0
        self._loop_ran_at = 0.0

    @property
    def is_open(self) -> bool:
        return self._channel is not None and self._channel.is_open and self._failure is None

    def open(self) -> None:
        """On the first broker that answers: declare the topology (on a short blocking connection),
        then open the confirming channel."""
        self.close()
        _opened, self.broker = first_answering(self.amqp_url, self.name, self._open_on)

    def _open_on(self, parameters: pika.URLParameters) -> None:
        declaring = pika.BlockingConnection(parameters)
        try:
            declare_topology(declaring.channel())
        finally:
            declaring.close()
        self._failure = None
        self._next_tag, self._unconfirmed, self._rejected = 1, set(), 0
        self._connection = pika.SelectConnection(
            parameters,
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_connection_lost,
            on_close_callback=self._on_connection_lost,
        )
        try:
            self._run_until(
                lambda: self._channel is not None and self._channel.is_open, CONNECT_TIMEOUT_SECONDS * 2, "open"
            )
        except PublishFailed:
            self.close()  # the next broker of a list is tried with a clean publisher
            raise

    def publish(self, messages: Sequence[Message]) -> None:
        """Return once the broker has confirmed every message; raise `PublishFailed` otherwise."""
        channel = self._channel
        if channel is None or not self.is_open:
            raise PublishFailed("the publishing channel is not open")
        first = self._next_tag
        for message in messages:
            channel.basic_publish(
                message.exchange, message.routing_key, message.body, message.properties, mandatory=True
            )
        self._next_tag = first + len(messages)
        self._unconfirmed.update(range(first, self._next_tag))
        self._run_until(lambda: not self._unconfirmed, self.confirm_timeout_seconds, "confirms")
        if self._rejected:
            rejected, self._rejected = self._rejected, 0
            raise PublishFailed(f"the broker rejected {rejected} of {len(messages)} message(s) (nacked or unroutable)")

    def keep_alive(self) -> None:
        """Between batches: answer heartbeats (and notice a lost connection) by running the I/O loop
        once without waiting, if it has not run for `KEEP_ALIVE_SECONDS`.

        An idle relay calls this every poll but sleeps on its own: each run of the loop builds an
        epoll set and is stopped through a socket pair, several times the CPU of a plain sleep, and
        heartbeats need the loop only once in a while (measured: docs/benchmarks.md, "Event path").
        """
        if self._connection is None or self._failure is not None:
            return
        if time.monotonic() - self._loop_ran_at < KEEP_ALIVE_SECONDS:
            return
        ioloop = self._connection.ioloop
        ioloop.add_callback(ioloop.stop)  # once the ready I/O and the due timers are processed
        self._run_loop()

    def close(self) -> None:
        connection, self._channel = self._connection, None
        if connection is None:
            return
        if not (connection.is_closed or connection.is_closing):
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()
        # Run the loop until the close completes (channel first, then connection), whatever failed before.
        ioloop = connection.ioloop
        deadline = time.monotonic() + CONNECT_TIMEOUT_SECONDS
        while not connection.is_closed and (remaining := deadline - time.monotonic()) > 0:
            timer = ioloop.call_later(remaining, ioloop.stop)
            ioloop.start()
            ioloop.remove_timeout(timer)
        self._connection = None
        with contextlib.suppress(Exception):
            connection.ioloop.close()

    # The I/O loop runs only inside `_run_until`; every callback stops it so the condition is re-checked.

    def _run_until(self, done: Callable[[], bool], timeout: float, waiting_for: str) -> None:
        assert self._connection is not None
        ioloop = self._connection.ioloop
        deadline = time.monotonic() + timeout
        while not done() and self._failure is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._failure = f"no answer from the broker within {timeout:g} s ({waiting_for})"
                break
            timer = ioloop.call_later(remaining, ioloop.stop)
            self._run_loop()
            ioloop.remove_timeout(timer)
        if self._failure is not None:
            raise PublishFailed(self._failure)

    def _run_loop(self) -> None:
        """Run the I/O loop until something stops it (a callback, a timer)."""
        assert self._connection is not None
        self._connection.ioloop.start()
        self._loop_ran_at = time.monotonic()

    def _on_connection_open(self, connection: pika.connection.Connection) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_channel_open(self, channel: Channel) -> None:
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._opened(channel))

    def _opened(self, channel: Channel) -> None:
        self._channel = channel
        self._stop_loop()

    def _on_confirm(self, frame: pika.frame.Method[Any]) -> None:
        method = frame.method
        tag = method.delivery_tag
        pending = len(self._unconfirmed)
        if method.multiple:
            self._unconfirmed = {unconfirmed for unconfirmed in self._unconfirmed if unconfirmed > tag}
        else:
            self._unconfirmed.discard(tag)
        if isinstance(method, pika.spec.Basic.Nack):
            self._rejected += pending - len(self._unconfirmed)  # one nack may refuse many messages
        self._stop_loop()

    def _on_return(self, _channel: Channel, _method: Any, _properties: Any, _body: bytes) -> None:
        # A return comes before the confirm of the same message.
        self._rejected += 1

    def _on_channel_closed(self, _channel: Channel, reason: BaseException) -> None:
        self._failure = f"channel closed: {reason}"
        self._stop_loop()

    def _on_connection_lost(self, _connection: pika.connection.Connection, reason: BaseException | str) -> None:
        self._failure = f"connection lost: {reason}"
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._connection is not None:
            self._connection.ioloop.stop()
