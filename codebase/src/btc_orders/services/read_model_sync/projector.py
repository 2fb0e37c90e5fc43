"""The projector: batches of events into the read model, acked only after the commit.

Messages arrive with a prefetch window; a batch (up to the prefetch, or what
came within `SYNC_BATCH_WAIT_SECONDS`) is applied in one read-model
transaction and acknowledged with one `multiple` ack after it committed. A
crash before the ack means redelivery; applying an event twice changes nothing
(the row is keyed by the order's sequence). A message that can never be
applied is rejected to the dead-letter queue at once and the rest flow on.
While the read model is down, the batch is retried with backoff and nothing is
acked, so nothing is lost.
"""

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from btc_orders import logs, metrics
from btc_orders.adapters import rabbitmq
from btc_orders.adapters.db import first_line
from btc_orders.adapters.read_model import apply_created_events
from btc_orders.events import BuyOrderCreated, InvalidEvent, parse_created_event
from btc_orders.services.worker import Backoff, StopFlag

log = logging.getLogger(__name__)

_HIGHEST_SEQUENCE = text("SELECT coalesce(max(sequence), 0) FROM buy_order_view")


@dataclass
class _Pending:
    delivery_tag: int
    event: BuyOrderCreated
    redelivered: bool


@dataclass
class Projector:
    engine: Engine
    amqp_url: str
    prefetch: int = 500
    batch_wait_seconds: float = 0.01
    name: str = "read_model_sync"
    _batch: list[_Pending] = field(default_factory=list)
    _highest_sequence: int = 0

    def run(self, stop: StopFlag) -> None:
        backoff = Backoff()
        with contextlib.suppress(DBAPIError), self.engine.connect() as connection:
            self._highest_sequence = connection.execute(_HIGHEST_SEQUENCE).scalar_one()
            metrics.READ_MODEL_MAX_SEQUENCE.set(self._highest_sequence)
        while not stop:
            try:
                self._consume(stop, backoff)
            except (pika.exceptions.AMQPError, OSError) as error:
                # Unacked messages go back to the queue with the connection; drop our copies.
                self._batch.clear()
                delay = backoff.delay()
                logs.event(log, "broker_unavailable", logging.WARNING, reason=repr(error), retry_in_seconds=delay)
                stop.wait(delay)

    def _consume(self, stop: StopFlag, backoff: Backoff) -> None:
        connection = rabbitmq.connect(self.amqp_url, self.name)
        try:
            channel = connection.channel()
            rabbitmq.declare_topology(channel)
            channel.basic_qos(prefetch_count=self.prefetch)
            logs.event(log, "broker_connected", queue=rabbitmq.QUEUE)
            backoff.reset()
            for method, properties, body in channel.consume(rabbitmq.QUEUE, inactivity_timeout=self.batch_wait_seconds):
                if method is not None:
                    assert properties is not None and body is not None
                    self._receive(channel, method, properties, body)
                if self._batch and (method is None or len(self._batch) >= self.prefetch):
                    self._flush(channel, connection, stop)
                if stop and not self._batch:
                    break
            channel.cancel()
        finally:
            if connection.is_open:
                connection.close()

    def _receive(
        self, channel: BlockingChannel, method: Basic.Deliver, properties: BasicProperties, body: bytes
    ) -> None:
        try:
            event = parse_created_event(body)
        except InvalidEvent as error:
            headers: dict[str, Any] = properties.headers or {}
            logs.event(
                log,
                "event_dead_lettered",
                logging.ERROR,
                reason=str(error),
                message_id=properties.message_id,
                request_id_header=headers.get("x-request-id"),
                body_prefix=body[:200].decode("utf-8", "replace"),
            )
            channel.basic_nack(method.delivery_tag, requeue=False)
            metrics.EVENTS_DEAD_LETTERED.inc()
            return
        if method.redelivered:
            metrics.EVENTS_REDELIVERED.inc()
        self._batch.append(_Pending(method.delivery_tag, event, bool(method.redelivered)))

    def _flush(self, channel: BlockingChannel, connection: pika.BlockingConnection, stop: StopFlag) -> None:
        backoff = Backoff()
        while True:
            try:
                self._apply(self._batch)
                break
            except OperationalError as error:
                if stop:  # leave the batch unacked: the broker redelivers it to another worker
                    self._batch.clear()
                    return
                delay = backoff.delay()
                logs.event(
                    log, "read_model_unavailable", logging.WARNING, reason=first_line(error), retry_in_seconds=delay
                )
                connection.sleep(delay)  # keeps the broker connection alive meanwhile
            except DBAPIError:
                self._apply_one_by_one(channel)
                return
        channel.basic_ack(self._batch[-1].delivery_tag, multiple=True)
        self._applied(self._batch)
        for pending in self._batch:
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
        self._batch.clear()

    def _apply(self, batch: list[_Pending]) -> None:
        with self.engine.begin() as connection:
            apply_created_events(connection, [_row(pending.event) for pending in batch])

    def _apply_one_by_one(self, channel: BlockingChannel) -> None:
        """A batch the database refused (not an outage): find the event at fault."""
        for pending in self._batch:
            try:
                self._apply([pending])
            except OperationalError:
                raise
            except DBAPIError as error:
                logs.event(
                    log,
                    "event_dead_lettered",
                    logging.ERROR,
                    reason=first_line(error),
                    event_id=str(pending.event.event_id),
                )
                channel.basic_nack(pending.delivery_tag, requeue=False)
                metrics.EVENTS_DEAD_LETTERED.inc()
                continue
            channel.basic_ack(pending.delivery_tag)
            self._applied([pending])
        self._batch.clear()

    def _applied(self, batch: list[_Pending]) -> None:
        metrics.EVENTS_APPLIED.inc(len(batch))
        self._highest_sequence = max(self._highest_sequence, *(p.event.order.sequence for p in batch))
        metrics.READ_MODEL_MAX_SEQUENCE.set(self._highest_sequence)


def _row(event: BuyOrderCreated) -> dict[str, Any]:
    order = event.order
    return {
        "sequence": order.sequence,
        "id": order.id,
        "created_at": order.created_at,
        "currency": order.currency.value,
        "amount": order.amount,
        "exchange_rate": order.exchange_rate,
        "bitcoin_amount": order.bitcoin_amount,
        "idempotence_key": order.idempotence_key,
        "event_id": event.event_id,
    }
