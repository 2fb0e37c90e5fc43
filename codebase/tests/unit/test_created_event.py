"""The `buy_order.created` event's exact text: the relay renders it from the stored order every time
a row is sent (adapters/outbox.py), so a change of a key, its order or a format changes the contract."""

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from btc_orders.domain import orders
from btc_orders.domain.orders import BuyOrder, Currency
from btc_orders.events import BuyOrderCreated, InvalidEvent, created_event, order_payload_model, parse_created_event

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
        '"idempotence_key":"5fa733ae-82b4-4ac0-8478-35ff30dae879","client_order_id":null,"sequence":42}}'
    )


def test_with_a_client_order_id_it_is_carried_after_the_key_escaped_as_json() -> None:
    text = created_event(replace(ORDER, client_order_id='shop "42"\\A'), EVENT_ID, None)
    assert '"idempotence_key":"5fa733ae-82b4-4ac0-8478-35ff30dae879","client_order_id":"shop \\"42\\"\\\\A",' in text
    assert parse_created_event(text.encode()).order.client_order_id == 'shop "42"\\A'


def test_without_a_request_id_it_is_null_and_the_worker_reads_the_order_back() -> None:
    text = created_event(ORDER, EVENT_ID, None)
    assert '"request_id":null,' in text
    event = parse_created_event(text.encode())
    assert (event.order.sequence, event.order.amount, event.order.created_at) == (
        42,
        "10.50",
        datetime(2026, 11, 24, 12, 0, 0, 5, tzinfo=UTC),
    )


# Readable one version either way: a worker from before `client_order_id` (SPEC 3.1) was declared
# and a worker from after read each other's events; so does the worker of this tree.

WITHOUT = tuple(field for field in orders.FIELDS if field is not orders.CLIENT_ORDER_ID)


class BeforeTheField(BuyOrderCreated):
    order: order_payload_model(WITHOUT)


class AfterTheField(BuyOrderCreated):
    order: order_payload_model((*WITHOUT, orders.CLIENT_ORDER_ID))


def _with_order(**changes: object) -> bytes:
    event = json.loads(created_event(ORDER, EVENT_ID, None))
    event["order"].pop("client_order_id", None)
    event["order"].update(changes)
    return json.dumps(event).encode()


OLD_EVENT = _with_order()
NEW_EVENT = _with_order(client_order_id="shop-42/A")


def test_a_reader_from_before_the_field_ignores_it() -> None:
    assert BeforeTheField.model_validate_json(NEW_EVENT) == BeforeTheField.model_validate_json(OLD_EVENT)


def test_a_reader_from_after_the_field_reads_an_event_without_it_as_null() -> None:
    old = AfterTheField.model_validate_json(OLD_EVENT).order
    assert old.client_order_id is None
    assert old.values() == {**BeforeTheField.model_validate_json(OLD_EVENT).order.values(), "client_order_id": None}
    assert AfterTheField.model_validate_json(NEW_EVENT).order.client_order_id == "shop-42/A"


def test_a_reader_that_declares_the_field_keeps_it_strict() -> None:
    for bad in ["", "x" * 65, "é", "tab\there", 42]:
        with pytest.raises(ValidationError):
            AfterTheField.model_validate_json(_with_order(client_order_id=bad))


def test_the_workers_reader_reads_both() -> None:
    old, new = parse_created_event(OLD_EVENT).order.values(), parse_created_event(NEW_EVENT).order.values()
    assert old["client_order_id"] is None, "an event from a relay before the field: null"
    assert new == {**old, "client_order_id": "shop-42/A"}


def test_what_is_declared_stays_strict_whatever_else_comes() -> None:
    for changes in [{"amount": "1e3"}, {"amount": 10.5}, {"sequence": 0}, {"currency": "XXX"}, {"id": "x"}]:
        with pytest.raises(InvalidEvent):
            parse_created_event(_with_order(client_order_id="shop-42/A", **changes))
    event = json.loads(_with_order())
    del event["order"]["idempotence_key"]
    with pytest.raises(InvalidEvent):
        parse_created_event(json.dumps(event).encode())


def test_the_order_payload_follows_the_declaration() -> None:
    order = parse_created_event(created_event(ORDER, EVENT_ID, None).encode()).order
    assert list(type(order).model_fields) == list(orders.EVENT_FIELDS)
    assert order.values() == {
        **ORDER.event_order(),
        "id": ORDER.id,
        "idempotence_key": ORDER.idempotence_key,
        "created_at": datetime(2026, 11, 24, 12, 0, 0, 5, tzinfo=UTC),
    }


def test_every_kind_of_value_has_its_annotation() -> None:
    every_kind = tuple(orders.OrderField(kind.name.replace(" ", "_"), kind) for kind in orders.KINDS)
    assert list(order_payload_model(every_kind).model_fields) == [field.name for field in every_kind]
