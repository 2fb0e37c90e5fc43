"""The projector: batches of events into the read model, acked only after the commit.

Messages arrive with a prefetch window; a batch (up to the prefetch, or what
came within `SYNC_BATCH_WAIT_SECONDS`) is applied in one read-model
transaction and acknowledged with one `multiple` ack after it committed. A
crash before the ack means redelivery; applying an event twice changes nothing
(the row is keyed by the order's sequence).

Poison or outage is decided by what the error means (`db.is_outage`, by
SQLSTATE), never by the exception's class:

- a message that cannot be parsed or validated, or an event whose own data the
  read model refuses (a data exception, a constraint it violates), is rejected
  to the dead-letter queue at once and the rest flow on;
- anything else (the read model unreachable, read-only, missing a table or a
  privilege, out of connections, shutting down) is an outage: nothing is acked,
  nothing dead-lettered; the batch is held and retried with jittered backoff,
  one log event when the outage begins and one when it ends.

Quorum queues count every return of a message towards its delivery limit
(RabbitMQ 4.0 counts channel closes too), so the projector never returns a
message it can still apply: on a graceful stop it cancels its consumer, applies
and acks what it already holds, then closes; and a held event already returned
`WORN_DELIVERIES` times is republished fresh (confirmed, then the worn copy acked)
so that an outage never pushes a valid event to the limit. See docs/decisions.md.
"""

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties
from sqlalchemy import Engine

from btc_orders import logs, metrics, urls
from btc_orders.adapters import rabbitmq
from btc_orders.adapters.db import DATABASE_ERRORS, first_line, is_outage
from btc_orders.adapters.projection import apply_created_events, event_row, highest_sequence
from btc_orders.events import BuyOrderCreated, InvalidEvent, parse_created_event
from btc_orders.services.worker import Backoff, OutageLog, StopFlag

log = logging.getLogger(__name__)

# Returns after which a held event is republished fresh instead of being returned once more.
WORN_DELIVERIES = rabbitmq.DELIVERY_LIMIT // 2
# On a graceful stop, deliveries in flight are waited for until none came for this long.
STOP_QUIET_SECONDS = 0.2


@dataclass
class _Pending:
    delivery_tag: int
    event: BuyOrderCreated
    redelivered: bool
    deliveries: int
    body: bytes
    properties: BasicProperties


class _Outage(Exception):
    """The read model cannot take the batch now (carries the database error)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(first_line(error))
        self.error = error


@dataclass
class Projector:
    engine: Engine
    amqp_url: str
    prefetch: int = 500
    batch_wait_seconds: float = 0.01
    name: str = "read_model_sync"
    _batch: list[_Pending] = field(default_factory=list)
    _inbox: list[tuple[Basic.Deliver, BasicProperties, bytes]] = field(default_factory=list)
    _highest_sequence: int = 0

    def __post_init__(self) -> None:
        self._read_model_outage = OutageLog(log, "read_model_unavailable", "read_model_available")
        self._broker_outage = OutageLog(log, "broker_unavailable", "broker_available")
        self._republisher: BlockingChannel | None = None

    def run(self, stop: StopFlag) -> None:
        backoff = Backoff()
        try:
            with self.engine.connect() as connection:
                self._highest_sequence = highest_sequence(connection)
                metrics.READ_MODEL_MAX_SEQUENCE.set(self._highest_sequence)
        except DATABASE_ERRORS:
            pass  # the gauge waits for the first batch
        while not stop:
            try:
                self._consume(stop, backoff)
            except rabbitmq.BROKER_ERRORS as error:
                # Unacked messages go back to the queue with the connection; drop our copies.
                self._batch.clear()
                self._inbox.clear()
                self._broker_outage.failed(rabbitmq.reason(error))
                stop.wait(backoff.delay())

    def _consume(self, stop: StopFlag, backoff: Backoff) -> None:
        connection, broker = rabbitmq.connect(self.amqp_url, self.name)
        try:
            channel = rabbitmq.declare_topology(connection.channel())
            channel.basic_qos(prefetch_count=self.prefetch)
            self._republisher = None
            consumer_tag = channel.basic_consume(rabbitmq.QUEUE, self._deliver)
            logs.event(log, "broker_connected", queue=rabbitmq.QUEUE, broker=urls.mask(broker))
            self._broker_outage.recovered()
            backoff.reset()
            while not stop:
                connection.process_data_events(time_limit=0 if self._inbox else self.batch_wait_seconds)
                arrived = bool(self._inbox)
                self._take_inbox(channel)
                if self._batch and (not arrived or len(self._batch) >= self.prefetch):
                    self._flush(channel, connection, stop)
            self._stop_consuming(channel, connection, consumer_tag, stop)
        finally:
            if connection.is_open:
                connection.close()

    def _deliver(
        self, _channel: BlockingChannel, method: Basic.Deliver, properties: BasicProperties, body: bytes
    ) -> None:
        self._inbox.append((method, properties, body))

    def _take_inbox(self, channel: BlockingChannel) -> None:
        inbox, self._inbox = self._inbox, []
        for method, properties, body in inbox:
            self._receive(channel, method, properties, body)

    def _stop_consuming(
        self, channel: BlockingChannel, connection: pika.BlockingConnection, consumer_tag: str, stop: StopFlag
    ) -> None:
        """Graceful stop: no more deliveries, then apply and ack what is held, so nothing is returned.

        pika rejects (returns) what arrives for a cancelled consumer, so the consumer is
        cancelled only once nothing can be in flight: the prefetch window is full of held,
        unacked messages (the broker cannot send more), or nothing came for a moment.
        """
        quiet_since = time.monotonic()
        while len(self._batch) + len(self._inbox) < self.prefetch:
            held = len(self._inbox)
            connection.process_data_events(time_limit=0.02)
            now = time.monotonic()
            if len(self._inbox) > held:
                quiet_since = now
            elif now - quiet_since >= STOP_QUIET_SECONDS:
                break
        channel.basic_cancel(consumer_tag)
        self._take_inbox(channel)
        if self._batch:
            self._flush(channel, connection, stop)

    def _receive(
        self, channel: BlockingChannel, method: Basic.Deliver, properties: BasicProperties, body: bytes
    ) -> None:
        headers: dict[str, Any] = properties.headers or {}
        try:
            event = parse_created_event(body)
        except InvalidEvent as error:
            self._dead_letter(channel, method.delivery_tag, str(error), properties, body)
            return
        if method.redelivered:
            metrics.EVENTS_REDELIVERED.inc()
        deliveries = headers.get("x-delivery-count", 0)
        pending = _Pending(
            method.delivery_tag,
            event,
            bool(method.redelivered),
            deliveries if isinstance(deliveries, int) else 0,
            body,
            properties,
        )
        self._batch.append(pending)

    def _flush(self, channel: BlockingChannel, connection: pika.BlockingConnection, stop: StopFlag) -> None:
        """Apply the batch; on an outage hold it (unacked) and retry until it is applied or we stop."""
        backoff = Backoff()
        while self._batch:
            try:
                self._apply_batch(channel)
            except _Outage as outage:
                self._read_model_outage.failed(str(outage), held_events=len(self._batch))
                self._renew_worn(channel, connection)
                if stop or not channel.is_open:
                    # Unacked, the batch goes back to the queue with the connection: not lost, not dead.
                    self._batch.clear()
                    return
                connection.sleep(backoff.delay())  # keeps the broker connection alive meanwhile
        self._read_model_outage.recovered()

    def _apply_batch(self, channel: BlockingChannel) -> None:
        try:
            self._apply(self._batch)
        except DATABASE_ERRORS as error:
            if is_outage(error):
                raise _Outage(error) from error
            self._apply_one_by_one(channel)  # refused for some event's content: find it
            return
        channel.basic_ack(self._batch[-1].delivery_tag, multiple=True)
        self._applied(self._batch)
        self._batch.clear()

    def _apply(self, batch: list[_Pending]) -> None:
        with self.engine.begin() as connection:
            apply_created_events(connection, [event_row(pending.event) for pending in batch])

    def _apply_one_by_one(self, channel: BlockingChannel) -> None:
        """A batch the database refused for its content: dead-letter the events at fault, apply the rest.

        Each event leaves the batch once settled; an outage on the way stops here with the
        rest still held (the caller retries them).
        """
        while self._batch:
            pending = self._batch[0]
            try:
                self._apply([pending])
            except DATABASE_ERRORS as error:
                if is_outage(error):
                    raise _Outage(error) from error
                self._dead_letter(channel, pending.delivery_tag, first_line(error), pending.properties, pending.body)
                self._batch.pop(0)
                continue
            channel.basic_ack(pending.delivery_tag)
            self._applied([pending])
            self._batch.pop(0)

    def _renew_worn(self, channel: BlockingChannel, connection: pika.BlockingConnection) -> None:
        """Republish held events returned `WORN_DELIVERIES` times already, then ack the worn copies.

        The fresh copy starts with no deliveries; applying both changes nothing. Only during an
        outage: a valid event is never pushed to the delivery limit by the read model being away.
        """
        worn = [pending for pending in self._batch if pending.deliveries >= WORN_DELIVERIES]
        if not worn or not channel.is_open:
            return
        if self._republisher is None or not self._republisher.is_open:
            self._republisher = connection.channel()
            self._republisher.confirm_delivery()
        for pending in worn:
            properties = pending.properties
            headers = {k: v for k, v in (properties.headers or {}).items() if not k.startswith("x-delivery")}
            properties.headers = headers or None
            # Confirmed and routable (raises otherwise), then the worn copy is acked.
            self._republisher.basic_publish(
                rabbitmq.EXCHANGE, rabbitmq.ROUTING_KEY, pending.body, properties, mandatory=True
            )
            channel.basic_ack(pending.delivery_tag)
            self._batch.remove(pending)
        logs.event(log, "events_renewed", logging.WARNING, count=len(worn), deliveries_at_least=WORN_DELIVERIES)

    def _dead_letter(
        self, channel: BlockingChannel, delivery_tag: int, reason: str, properties: BasicProperties, body: bytes
    ) -> None:
        headers: dict[str, Any] = properties.headers or {}
        logs.event(
            log,
            "event_dead_lettered",
            logging.ERROR,
            reason=reason,
            message_id=properties.message_id,
            request_id_header=headers.get("x-request-id"),
            body_prefix=body[:200].decode("utf-8", "replace"),
        )
        channel.basic_nack(delivery_tag, requeue=False)
        metrics.EVENTS_DEAD_LETTERED.inc()

    def _applied(self, batch: list[_Pending]) -> None:
        metrics.EVENTS_APPLIED.inc(len(batch))
        self._highest_sequence = max(self._highest_sequence, *(p.event.order.sequence for p in batch))
        metrics.READ_MODEL_MAX_SEQUENCE.set(self._highest_sequence)
        for pending in batch:
            token = logs.request_id_var.set(pending.event.request_id)
            logs.event(
                log,
                "event_applied",
                event_id=str(pending.event.event_id),
                order_id=str(pending.event.order.id),
                sequence=pending.event.order.sequence,
                redelivered=pending.redelivered,
            )
            logs.request_id_var.reset(token)
