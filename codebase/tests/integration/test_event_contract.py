"""The buy_order.created v1 contract: one JSON Schema, kept by the relay and the worker alike."""

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pika
import pytest
import yaml
from sqlalchemy import Engine

from btc_orders.adapters import rabbitmq
from btc_orders.domain.orders import Currency
from btc_orders.events import SCHEMA_PATH, InvalidEvent, json_schema, parse_created_event
from btc_orders.services.outbox_relay.relay import Relay
from tests.support.workers import store_orders

REPO = Path(__file__).resolve().parents[3]
SCHEMA = json.loads(SCHEMA_PATH.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)

GOOD: dict[str, Any] = {
    "event_id": "0b0f6f5e-8b6e-4c59-9d3e-0f3c8f5f9a11",
    "type": "buy_order.created",
    "version": 1,
    "occurred_at": "2026-11-24T12:00:00.123456Z",
    "request_id": "abc",
    "order": {
        "id": "5b6f0c3c-3f7b-4b0e-8f47-5a2b8c1d9e01",
        "sequence": 7,
        "created_at": "2026-11-24T12:00:00.123456Z",
        "currency": "USD",
        "amount": "123.45",
        "exchange_rate": "97012.34",
        "bitcoin_amount": "0.00127252",
        "idempotence_key": "5fa733ae-82b4-4ac0-8478-35ff30dae879",
    },
}


def with_change(path: str, new: object) -> dict[str, Any]:
    event = json.loads(json.dumps(GOOD))
    *parents, last = path.split(".")
    target = event
    for part in parents:
        target = target[part]
    if new is KeyError:
        del target[last]
    else:
        target[last] = new
    return dict(event)


BAD = [
    with_change("version", 2),
    with_change("type", "buy_order.updated"),
    with_change("order.amount", "-1.00"),
    with_change("order.amount", "1e3"),
    with_change("order.currency", "XXX"),
    with_change("order.sequence", 0),
    with_change("order.id", "not-a-uuid"),
    with_change("order.bitcoin_amount", KeyError),
    with_change("event_id", KeyError),
    with_change("occurred_at", "yesterday"),
    with_change("request_id", 7),
    with_change("order.exchange_rate", 97012.34),
    with_change("order.created_at", KeyError),
]
# Readable one version either way: a field the reader does not know (a newer writer's) is ignored.
NEWER = [
    with_change("order.time_in_force", "GTC"),
    with_change("order.time_in_force", None),
    with_change("causation_id", "0b0f6f5e-8b6e-4c59-9d3e-0f3c8f5f9a12"),
]


def test_the_committed_schema_is_the_one_the_code_generates() -> None:
    assert json_schema() == SCHEMA, "regenerate: python -m btc_orders.events > src/btc_orders/contracts/…"


def test_a_good_event_passes_both_the_schema_and_the_worker() -> None:
    VALIDATOR.validate(GOOD)
    parse_created_event(json.dumps(GOOD).encode())


@pytest.mark.parametrize("event", BAD, ids=lambda e: json.dumps(e)[:60])
def test_what_the_schema_refuses_the_worker_refuses(event: dict[str, Any]) -> None:
    assert not VALIDATOR.is_valid(event)
    with pytest.raises(InvalidEvent):
        parse_created_event(json.dumps(event).encode())


@pytest.mark.parametrize("event", NEWER, ids=lambda e: json.dumps(e)[-70:])
def test_a_newer_writers_extra_field_passes_both_the_schema_and_the_worker(event: dict[str, Any]) -> None:
    VALIDATOR.validate(event)
    assert parse_created_event(json.dumps(event).encode()) == parse_created_event(json.dumps(GOOD).encode())


def test_the_asyncapi_document_names_the_real_topology_and_schema() -> None:
    document = yaml.safe_load((REPO / "docs" / "asyncapi.yaml").read_text())
    channels = document["channels"]
    assert channels["buyOrderCreated"]["address"] == rabbitmq.ROUTING_KEY
    assert channels["buyOrderCreated"]["bindings"]["amqp"]["exchange"]["name"] == rabbitmq.EXCHANGE
    assert channels["readModelSync"]["bindings"]["amqp"]["queue"]["name"] == rabbitmq.QUEUE
    assert channels["readModelSyncDead"]["address"] == rabbitmq.DEAD_LETTER_QUEUE
    payload = document["components"]["messages"]["buyOrderCreated"]["payload"]["$ref"]
    assert (REPO / "docs" / payload).resolve() == SCHEMA_PATH.resolve()


def test_what_the_relay_publishes_conforms_to_the_schema(write_engine: Engine, amqp_url: str) -> None:
    for index, currency in enumerate(Currency):
        store_orders(
            write_engine, 1, currency.value, Decimal(f"{index + 1}0.5"), Decimal("97012.340"), [f"req-{index}"]
        )
    relay = Relay(write_engine, amqp_url)
    assert relay.relay_once() == 3
    relay.close()

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    bodies = []
    for _ in range(3):
        method, properties, body = channel.basic_get(rabbitmq.QUEUE, auto_ack=True)
        assert method is not None
        assert properties.delivery_mode == 2 and properties.content_type == "application/json"
        bodies.append(json.loads(body))
    connection.close()
    for body in bodies:
        VALIDATOR.validate(body)
        assert properties.message_id is not None
    assert {body["order"]["exchange_rate"] for body in bodies} == {"97012.340"}
    assert sorted(body["request_id"] for body in bodies) == ["req-0", "req-1", "req-2"]
