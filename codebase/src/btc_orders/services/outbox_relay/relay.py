"""The relay: outbox rows to RabbitMQ, marked sent only after the broker confirmed them.

Each round locks a batch of unsent rows (`FOR UPDATE SKIP LOCKED`, so several
relays share the work without sending a row twice at once), each with its event
rendered from its order (every statement is in `adapters/outbox.py`), publishes them all
as persistent messages on a confirming channel, waits once for the broker's
confirms of the whole batch, then marks the rows sent and commits. A crash, an
outage, a nack or an unroutable message between publish and commit leaves the
whole batch unsent: it is published again later (at-least-once); the read side
ignores the replays.

Idle, the relay polls every `OUTBOX_POLL_INTERVAL_SECONDS` with `outbox.any_unsent`:
one small statement (an index-only probe of the partial index of unsent rows, prepared by the
driver) in autocommit on a connection of the relay's one pool, instead of a claim's transaction
(begin, claim, commit: three round trips). The relay holds no connection between polls, so a pool
of one is enough (the admin CLI's resend runs the relay so). It claims only when the probe finds
a row, or right after a round that claimed (more may wait: the probe would only add a round trip
under load). A row committed just after a probe is found by the next poll, as it was by the next
claim.

Every `PRUNE_INTERVAL_SECONDS` the relay deletes rows sent more than
`OUTBOX_RETENTION_SECONDS` ago, in batches of `PRUNE_BATCH` rows, each its own
short transaction, found by the partial index of sent rows and locked with
`SKIP LOCKED` (so relays pruning at once, or an `admin outbox resend` marking the
same rows unsent, never wait on each other: a row being marked unsent is left
alone, and a row marked unsent is no longer a candidate). LISTEN/NOTIFY was not used: a NOTIFY in
the order transaction takes a database-wide lock at commit, which serialises every
order (measured: docs/decisions.md, "relay wake-up").
"""

import logging
import time
from dataclasses import dataclass

import pika
import pika.exceptions
from sqlalchemy import Engine

from btc_orders import logs, metrics, urls
from btc_orders.adapters import outbox, rabbitmq
from btc_orders.adapters.db import DATABASE_ERRORS, first_line
from btc_orders.services.worker import Backoff, OutageLog, StopFlag

log = logging.getLogger(__name__)

# What a round may meet that a later round may not: the broker or the write model away, busy or lost.
_OUTAGES: tuple[type[Exception], ...] = (*rabbitmq.BROKER_ERRORS, *DATABASE_ERRORS)

GAUGE_INTERVAL_SECONDS = 1.0
PRUNE_INTERVAL_SECONDS = 2.0
PRUNE_BATCH = 2000
PRUNE_BUDGET_SECONDS = 1.0
DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600


@dataclass
class Relay:
    engine: Engine
    amqp_url: str
    batch_size: int = 500
    poll_interval_seconds: float = 0.02
    name: str = "outbox_relay"
    retention_seconds: float = DEFAULT_RETENTION_SECONDS

    def __post_init__(self) -> None:
        self._publisher = rabbitmq.ConfirmingPublisher(self.amqp_url, self.name)
        self._gauges_read_at = 0.0
        self._pruned_at = 0.0
        self._prune_failing = False
        self._outage = OutageLog(log, "relay_retrying", "relay_recovered")
        self._claimed_last_round = False

    def run(self, stop: StopFlag) -> None:
        backoff = Backoff()
        while not stop:
            try:
                self._read_gauges()
                self._prune_now_and_then()
                published = self.relay_once()
                backoff.reset()
                self._outage.recovered()
                if published < self.batch_size:
                    self._idle(stop)
            except _OUTAGES as error:
                broker = isinstance(error, rabbitmq.BROKER_ERRORS)
                self._outage.failed(
                    rabbitmq.reason(error) if broker else f"{type(error).__name__}: {first_line(error)}"
                )
                self.close()
                stop.wait(backoff.delay())
        self.close()

    def prune(self) -> int:
        """Delete sent rows older than the retention, a few short transactions; return how many."""
        pruned, started = 0, time.monotonic()
        while time.monotonic() - started < PRUNE_BUDGET_SECONDS:
            with self.engine.begin() as connection:
                deleted = outbox.prune(connection, self.retention_seconds, PRUNE_BATCH)
            pruned += deleted
            if deleted < PRUNE_BATCH:
                break
        if pruned:
            metrics.OUTBOX_PRUNED.inc(pruned)
            logs.event(log, "outbox_pruned", logging.DEBUG, rows=pruned)
        return pruned

    def _prune_now_and_then(self) -> None:
        """Prune every `PRUNE_INTERVAL_SECONDS`. Pruning is housekeeping: a prune that fails (the
        relay's role may not DELETE, the database is away) is logged once and never stops the
        relaying (an outage is then met, and handled, by the relaying itself)."""
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_INTERVAL_SECONDS:
            return
        self._pruned_at = now
        try:
            self.prune()
        except DATABASE_ERRORS as error:
            if not self._prune_failing:
                logs.event(log, "outbox_prune_failed", logging.ERROR, reason=first_line(error))
            self._prune_failing = True
        else:
            self._prune_failing = False

    def relay_once(self) -> int:
        """Publish one batch of unsent rows; return how many were published."""
        publisher = self._ensure_publisher()
        if not self._claimed_last_round and not self._any_unsent():
            return 0
        with self.engine.begin() as connection:
            rows = outbox.claim(connection, self.batch_size)
            self._claimed_last_round = bool(rows)
            if not rows:
                return 0
            metrics.EVENTS_PUBLISHED.inc(len(rows))
            publisher.publish([_message(row) for row in rows])
            outbox.mark_sent(connection, [row.id for row in rows])
        metrics.EVENTS_CONFIRMED.inc(len(rows))
        for row in rows:
            token = logs.request_id_var.set(row.request_id)
            logs.event(log, "event_published", event_id=str(row.event_id), outbox_id=row.id)
            logs.request_id_var.reset(token)
        return len(rows)

    def _read_gauges(self) -> None:
        """Outbox backlog, its oldest row's age and the write model's last sequence, once a second."""
        now = time.monotonic()
        if now - self._gauges_read_at < GAUGE_INTERVAL_SECONDS:
            return
        self._gauges_read_at = now
        with self.engine.connect() as connection:
            backlog = outbox.backlog(connection)
        metrics.OUTBOX_BACKLOG.set(backlog.unsent)
        metrics.OUTBOX_OLDEST_AGE.set(backlog.oldest_age_seconds)
        metrics.WRITE_MODEL_MAX_SEQUENCE.set(backlog.max_sequence)

    def _ensure_publisher(self) -> rabbitmq.ConfirmingPublisher:
        if not self._publisher.is_open:
            self._publisher.open()
            logs.event(log, "broker_connected", broker=urls.mask(self._publisher.broker))
        return self._publisher

    def _idle(self, stop: StopFlag) -> None:
        if self._publisher.is_open:
            self._publisher.keep_alive()  # heartbeats answered while idle
        stop.wait(self.poll_interval_seconds)

    def _any_unsent(self) -> bool:
        return outbox.any_unsent(self.engine)

    def close(self) -> None:
        self._publisher.close()


def _message(row: outbox.Claimed) -> rabbitmq.Message:
    return rabbitmq.Message(
        row.routing_key,
        row.payload.encode(),
        pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=str(row.event_id),
            type=rabbitmq.ROUTING_KEY,
            headers={"x-request-id": row.request_id} if row.request_id else None,
        ),
    )
