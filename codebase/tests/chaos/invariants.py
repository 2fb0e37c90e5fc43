"""The invariant checker: the client history against both databases and the broker."""

from collections import Counter
from decimal import Decimal
from typing import Any

import httpx
import pika
from sqlalchemy import Engine, text

from btc_orders.adapters import outbox, rabbitmq
from btc_orders.domain import orders
from btc_orders.events import InvalidEvent, parse_created_event
from tests.chaos.clients import History

_WRITE_ORDERS = text(
    """
    SELECT sequence, id::text AS id, created_at, currency, amount::text AS amount,
           exchange_rate::text AS exchange_rate, bitcoin_amount::text AS bitcoin_amount,
           idempotence_key::text AS idempotence_key, client_order_id
    FROM buy_order
    """
)
_READ_ORDERS = text(
    """
    SELECT sequence, id::text AS id, created_at, currency, amount, exchange_rate, bitcoin_amount,
           idempotence_key::text AS idempotence_key, client_order_id
    FROM buy_order_view
    """
)


def resource(row: Any) -> dict[str, Any]:
    """The order resource of a write- or read-model row (money selected as text), as the API renders it."""
    return orders.resource_of(row._mapping)


def check(
    history: History, write: Engine, read: Engine, amqp_url: str, fetch_url: str, cap: Decimal
) -> tuple[list[str], dict[str, Any]]:
    """Every broken invariant as a sentence, and the figures of the run."""
    problems = list(history.violations)
    with write.connect() as connection:
        written = {row.id: row for row in connection.execute(_WRITE_ORDERS)}
        unsent = outbox.unsent_count(connection)
        slots = connection.execute(text("SELECT coalesce(sum(remaining_satoshis), 0) FROM cap_slot")).scalar_one()
    with read.connect() as connection:
        projected_rows = list(connection.execute(_READ_ORDERS))
    projected = {row.id: row for row in projected_rows}

    # no key has two orders; the read model has each order once, with the same fields
    keys = Counter(row.idempotence_key for row in written.values())
    problems += [f"idempotence key {key} has {n} orders" for key, n in keys.items() if n > 1]
    if len(projected_rows) != len(projected):
        problems.append("an order appears twice in the read model")
    for order_id, row in written.items():
        if order_id not in projected:
            problems.append(f"order {order_id} (sequence {row.sequence}) is missing from the read model")
        elif resource(projected[order_id]) != resource(row):
            problems.append(f"order {order_id} differs between the write and read models")
    problems += [f"order {order_id} is in the read model only" for order_id in set(projected) - set(written)]

    # every acknowledged order exists, as it was answered; every other order had a lost answer
    acknowledged_ids: set[str] = set()
    for key in history.keys.values():
        answers = {body["id"] for body in key.acknowledged}
        if len(answers) > 1:
            problems.append(f"key {key.key} was answered with {len(answers)} different orders")
        for body in key.acknowledged:
            acknowledged_ids.add(body["id"])
            stored = written.get(body["id"])
            if stored is None:
                problems.append(f"acknowledged order {body['id']} is not in the write model (lost)")
            elif resource(stored) != body:
                problems.append(f"acknowledged order {body['id']} is not stored as it was answered")
    by_key = history.keys
    unacknowledged = [row for order_id, row in written.items() if order_id not in acknowledged_ids]
    for row in unacknowledged:
        key_history = by_key.get(row.idempotence_key)
        if key_history is None or key_history.lost_answers == 0:
            problems.append(f"order {row.id} was stored but no request for it lost its answer")

    # the cap
    total = sum((Decimal(row.bitcoin_amount) for row in written.values()), Decimal(0))
    if total > cap:
        problems.append(f"the orders sum to {total} BTC, above the cap of {cap}")
    if total + Decimal(slots).scaleb(-8) != cap:
        problems.append(f"the cap ledger holds {Decimal(slots).scaleb(-8)} BTC but {cap - total} BTC are left")

    # the outbox and the dead letters
    if unsent:
        problems.append(f"{unsent} outbox rows were never sent")
    valid_dead_letters = _valid_dead_letters(amqp_url)
    if valid_dead_letters:
        problems.append(f"{valid_dead_letters} valid events are in the dead-letter queue")

    # paging: one pass from the top yields every order once, newest first
    paged = _page_all(fetch_url)
    expected = [row.id for row in sorted(projected_rows, key=lambda row: row.sequence, reverse=True)]
    if paged != expected:
        problems.append(f"paging yielded {len(paged)} orders, not the {len(expected)} of the read model in order")

    figures = {
        "orders": len(written),
        "acknowledged": len(acknowledged_ids),
        "stored_without_acknowledgement": len(unacknowledged),
        "btc_stored": str(total),
        "cap_btc": str(cap),
        "lost": sum(1 for p in problems if "(lost)" in p),
        "duplicated": sum(1 for n in keys.values() if n > 1),
        "cap_breaches": int(total > cap),
    }
    return problems, figures


def _valid_dead_letters(amqp_url: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        valid = 0
        while True:
            method, _properties, body = channel.basic_get(rabbitmq.DEAD_LETTER_QUEUE, auto_ack=False)
            if method is None:
                break
            try:
                parse_created_event(body)
                valid += 1
            except InvalidEvent:
                pass
        return valid  # unacked: they go back to the queue when the connection closes
    finally:
        connection.close()


def _page_all(fetch_url: str) -> list[str]:
    ids: list[str] = []
    reference = None
    with httpx.Client(timeout=10) as client:
        while True:
            params: dict[str, Any] = {"page_size": 1000}
            if reference:
                params["last_reference"] = reference
            page = client.get(f"{fetch_url}/buy_orders", params=params).json()
            ids += [order["id"] for order in page["buy_orders"]]
            if not page["has_more"]:
                return ids
            reference = page["last_reference"]
