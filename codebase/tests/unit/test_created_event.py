"""The `buy_order.created` event's exact text: the relay renders it from the stored order every time
a row is sent (adapters/outbox.py), so a change of a key, its order or a format changes the contract."""

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from btc_orders.domain.orders import BuyOrder, Currency
from btc_orders.events import created_event, parse_created_event

ORDER = BuyOrder(
    id=uuid.UUID("7a0b0a3e-4b1c-4f1e-9e62-3c0c4c7a3f10"),
    sequence=42,
    created_at=datetime(2026, 11, 24, 13, 0, 0, 5, tzinfo=timezone(timedelta(hours=1))),
    currency=Currency.EUR,
    amount=Decimal("10.5"),
    exchange_rate=Decimal("97012.340"),
    bitcoin_amount=Decimal("0.00010824"),
    idempotence_key=uuid.UUID("5fa733ae-82b4-4ac0-8478-35ff30dae879"),
)
EVENT_ID = uuid.UUID("2f1c6a56-8a8e-4c55-9a1e-0d7f4f0a9a11")


def test_the_event_is_exactly_this_text() -> None:
    assert created_event(ORDER, EVENT_ID, 'req "1"') == (
        '{"event_id":"2f1c6a56-8a8e-4c55-9a1e-0d7f4f0a9a11","type":"buy_order.created","version":1,'
        '"occurred_at":"2026-11-24T12:00:00.000005Z","request_id":"req \\"1\\"",'
        '"order":{"id":"7a0b0a3e-4b1c-4f1e-9e62-3c0c4c7a3f10","created_at":"2026-11-24T12:00:00.000005Z",'
        '"currency":"EUR","amount":"10.50","exchange_rate":"97012.340","bitcoin_amount":"0.00010824",'
        '"idempotence_key":"5fa733ae-82b4-4ac0-8478-35ff30dae879","sequence":42}}'
    )


def test_without_a_request_id_it_is_null_and_the_worker_reads_the_order_back() -> None:
    text = created_event(ORDER, EVENT_ID, None)
    assert '"request_id":null,' in text
    event = parse_created_event(text.encode())
    assert (event.order.sequence, event.order.amount, event.order.created_at) == (
        42,
        "10.50",
        datetime(2026, 11, 24, 12, 0, 0, 5, tzinfo=UTC),
    )
