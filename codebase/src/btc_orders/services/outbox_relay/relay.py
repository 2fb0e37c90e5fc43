"""The relay: outbox rows to RabbitMQ, marked sent only after the broker confirmed them.

Each round locks a batch of unsent rows (`FOR UPDATE SKIP LOCKED`, so several
relays share the work without sending a row twice at once), publishes them as
persistent messages on a confirming channel, then marks them sent and commits.
A crash or an outage between publish and commit leaves the rows unsent: they
are published again later (at-least-once); the read side ignores the replay.

Idle, the relay polls every `OUTBOX_POLL_INTERVAL_SECONDS` (an index-only probe
of the partial index of unsent rows). LISTEN/NOTIFY was not used: a NOTIFY in
the order transaction takes a database-wide lock at commit, which would
serialise every order.
"""

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy import Connection, Engine, Row, text
from sqlalchemy.exc import DBAPIError

from btc_orders import logs, metrics
from btc_orders.adapters import rabbitmq
from btc_orders.adapters.db import first_line
from btc_orders.services.worker import Backoff, StopFlag

log = logging.getLogger(__name__)

_LOCK_UNSENT = text(
    """
    SELECT id, event_id, routing_key, payload, request_id
    FROM outbox
    WHERE sent_at IS NULL
    ORDER BY id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)
_MARK_SENT = text("UPDATE outbox SET sent_at = now() WHERE id = ANY(:ids)")
_BACKLOG = text(
    """
    SELECT count(*) AS backlog,
           coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest_age,
           (SELECT coalesce(max(sequence), 0) FROM buy_order) AS max_sequence
    FROM outbox
    WHERE sent_at IS NULL
    """
)
GAUGE_INTERVAL_SECONDS = 1.0


@dataclass
class Relay:
    engine: Engine
    amqp_url: str
    batch_size: int = 500
    poll_interval_seconds: float = 0.02
    name: str = "outbox_relay"

    def __post_init__(self) -> None:
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._gauges_read_at = 0.0

    def run(self, stop: StopFlag) -> None:
        backoff = Backoff()
        while not stop:
            try:
                self._read_gauges()
                published = self.relay_once()
                backoff.reset()
                if published < self.batch_size:
                    self._idle(stop)
            except (pika.exceptions.AMQPError, DBAPIError, OSError) as error:
                delay = backoff.delay()
                reason = f"{type(error).__name__}: {first_line(error)}"
                logs.event(log, "relay_retrying", logging.WARNING, reason=reason, retry_in_seconds=delay)
                self.close()
                stop.wait(delay)
        self.close()

    def relay_once(self) -> int:
        """Publish one batch of unsent rows; return how many were published."""
        channel = self._ensure_channel()
        with self.engine.begin() as connection:
            rows = connection.execute(_LOCK_UNSENT, {"limit": self.batch_size}).all()
            if not rows:
                return 0
            for row in rows:
                self._publish(channel, row)
            self._mark_sent(connection, [row.id for row in rows])
        metrics.EVENTS_CONFIRMED.inc(len(rows))
        return len(rows)

    def _read_gauges(self) -> None:
        """Outbox backlog, its oldest row's age and the write model's last sequence, once a second."""
        now = time.monotonic()
        if now - self._gauges_read_at < GAUGE_INTERVAL_SECONDS:
            return
        self._gauges_read_at = now
        with self.engine.connect() as connection:
            row = connection.execute(_BACKLOG).one()
        metrics.OUTBOX_BACKLOG.set(row.backlog)
        metrics.OUTBOX_OLDEST_AGE.set(row.oldest_age)
        metrics.WRITE_MODEL_MAX_SEQUENCE.set(row.max_sequence)

    def _publish(self, channel: BlockingChannel, row: Row[Any]) -> None:
        request_id = row.request_id
        token = logs.request_id_var.set(request_id)
        try:
            # In confirm mode this returns only once the broker has confirmed the
            # message; an unroutable or nacked message raises.
            channel.basic_publish(
                rabbitmq.EXCHANGE,
                row.routing_key,
                row.payload.encode(),
                pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=str(row.event_id),
                    type=rabbitmq.ROUTING_KEY,
                    headers={"x-request-id": request_id} if request_id else None,
                ),
                mandatory=True,
            )
            metrics.EVENTS_PUBLISHED.inc()
            logs.event(log, "event_published", event_id=str(row.event_id), outbox_id=row.id)
        finally:
            logs.request_id_var.reset(token)

    def _mark_sent(self, connection: Connection, ids: list[int]) -> None:
        connection.execute(_MARK_SENT, {"ids": ids})

    def _ensure_channel(self) -> BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            self.close()
            self._connection = rabbitmq.connect(self.amqp_url, self.name)
            channel = self._connection.channel()
            rabbitmq.declare_topology(channel)
            channel.confirm_delivery()
            self._channel = channel
            logs.event(log, "broker_connected")
        return self._channel

    def _idle(self, stop: StopFlag) -> None:
        # Sleep through pika so that heartbeats are answered while idle.
        if self._connection is not None and self._connection.is_open:
            self._connection.sleep(self.poll_interval_seconds)
        else:
            stop.wait(self.poll_interval_seconds)

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()
