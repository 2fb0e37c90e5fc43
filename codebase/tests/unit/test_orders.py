"""The order resource and the idempotence rule."""

import re
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import TypeAdapter, ValidationError

from btc_orders.domain import orders
from btc_orders.domain.orders import BuyOrder, Currency, OrderRequest, format_timestamp
from btc_orders.services.resources import ClientOrderId

KEY = uuid.UUID("5fa733ae-82b4-4ac0-8478-35ff30dae879")
ORDER = BuyOrder(
    id=uuid.uuid4(),
    sequence=7,
    created_at=datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC),
    currency=Currency.USD,
    amount=Decimal("10.50"),
    exchange_rate=Decimal("97012.340"),
    bitcoin_amount=Decimal("0.00010824"),
    idempotence_key=KEY,
    client_order_id="shop-42/A",
)


def test_same_key_same_currency_amount_and_client_order_id_is_a_replay() -> None:
    assert ORDER.matches(OrderRequest(Currency.USD, Decimal("10.5"), KEY, "shop-42/A"))
    assert replace(ORDER, client_order_id=None).matches(OrderRequest(Currency.USD, Decimal("10.5"), KEY))


@pytest.mark.parametrize(
    "request_",
    [
        OrderRequest(Currency.EUR, Decimal("10.50"), KEY, "shop-42/A"),
        OrderRequest(Currency.USD, Decimal("10.51"), KEY, "shop-42/A"),
        OrderRequest(Currency.USD, Decimal("10.50"), KEY, "shop-42/B"),
        OrderRequest(Currency.USD, Decimal("10.50"), KEY, "SHOP-42/A"),
        OrderRequest(Currency.USD, Decimal("10.50"), KEY),  # stored with one, replayed without
    ],
)
def test_same_key_other_currency_amount_or_client_order_id_is_not_a_replay(request_: OrderRequest) -> None:
    assert not ORDER.matches(request_)


def test_an_order_placed_without_a_client_order_id_is_not_replayed_with_one() -> None:
    assert not replace(ORDER, client_order_id=None).matches(OrderRequest(Currency.USD, Decimal("10.50"), KEY, "x"))


def test_resource_carries_money_as_exact_decimal_strings() -> None:
    resource = ORDER.resource()
    assert resource["amount"] == "10.50"
    assert resource["exchange_rate"] == "97012.340"
    assert resource["bitcoin_amount"] == "0.00010824"
    assert resource["created_at"] == "2026-11-24T12:00:00.123456Z"


def test_timestamps_are_rfc3339_utc() -> None:
    moment = datetime(2026, 11, 24, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert format_timestamp(moment) == "2026-11-24T12:00:00.000000Z"


# The declaration (`orders.FIELDS`) and what follows from it.

ROW = {
    "sequence": 7,
    "id": ORDER.id,
    "created_at": ORDER.created_at,
    "currency": "USD",
    "amount": Decimal("10.50"),
    "exchange_rate": Decimal("97012.340"),
    "bitcoin_amount": Decimal("0.00010824"),
    "idempotence_key": KEY,
    "client_order_id": "shop-42/A",
    "request_id": "not an order field",
}


def test_the_resource_is_served_in_the_declared_order() -> None:
    assert orders.RESOURCE_FIELDS == (
        "id",
        "created_at",
        "currency",
        "amount",
        "exchange_rate",
        "bitcoin_amount",
        "idempotence_key",
        "client_order_id",
    )
    assert list(ORDER.resource()) == list(orders.RESOURCE_FIELDS)
    assert ORDER.resource()["client_order_id"] == "shop-42/A"
    assert replace(ORDER, client_order_id=None).resource()["client_order_id"] is None


def test_the_events_order_is_the_resource_then_the_sequence() -> None:
    assert ORDER.event_order() == {**ORDER.resource(), "sequence": 7}
    assert list(ORDER.event_order()) == [*orders.RESOURCE_FIELDS, "sequence"] == list(orders.EVENT_FIELDS)


def test_an_order_is_made_from_a_mapping_of_its_columns_by_name() -> None:
    assert BuyOrder.from_row(ROW) == ORDER
    assert BuyOrder.from_row(dict(reversed(ROW.items()))) == ORDER
    assert BuyOrder.from_row(ROW).currency is Currency.USD


def test_a_row_missing_a_column_is_refused() -> None:
    with pytest.raises(KeyError):
        BuyOrder.from_row({name: value for name, value in ROW.items() if name != "bitcoin_amount"})


def test_a_read_model_row_renders_the_same_resource_money_kept_as_published() -> None:
    published = {**ORDER.event_order(), "created_at": ORDER.created_at}
    assert orders.resource_of(published) == ORDER.resource()
    assert orders.resource_of({**published, "exchange_rate": "97012.3400"})["exchange_rate"] == "97012.3400"
    assert orders.event_order_of(published) == ORDER.event_order() == orders.event_order_of(ROW)


def test_the_columns_and_their_sql_types_are_the_migrations() -> None:
    assert orders.WRITE_TYPES == {
        "id": "uuid",
        "created_at": "timestamptz",
        "currency": "text",
        "amount": "numeric(11,2)",
        "exchange_rate": "numeric",
        "bitcoin_amount": "numeric(30,8)",
        "idempotence_key": "uuid",
        "client_order_id": "text",
        "sequence": "bigint",
    }
    assert set(orders.INSERTED_COLUMNS) == {
        "id",
        "currency",
        "amount",
        "exchange_rate",
        "bitcoin_amount",
        "idempotence_key",
        "client_order_id",
    }
    assert orders.READ_TYPES == {
        "id": "uuid",
        "created_at": "timestamptz",
        "currency": "text",
        "amount": "text",
        "exchange_rate": "text",
        "bitcoin_amount": "text",
        "idempotence_key": "uuid",
        "client_order_id": "text",
        "sequence": "bigint",
    }
    assert orders.columns("o").split(", ") == [f"o.{name}" for name in orders.COLUMNS]
    assert set(orders.COLUMNS) == set(ROW) - {"request_id"}


def test_the_request_and_the_replay_are_declared() -> None:
    assert orders.REQUEST_FIELDS == ("currency", "amount", "idempotence_key", "client_order_id")
    assert orders.REPLAY_FIELDS == ("currency", "amount", "client_order_id")
    assert {"client_order_id"} == orders.OPTIONAL_FIELDS


def test_an_order_class_that_differs_from_the_declaration_is_refused_at_import() -> None:
    @dataclass(frozen=True)
    class Missing:
        currency: Currency
        amount: Decimal

    @dataclass(frozen=True)
    class Retyped:
        currency: str
        amount: Decimal
        idempotence_key: uuid.UUID

    for cls in (Missing, Retyped):
        with pytest.raises(TypeError, match=cls.__name__):
            orders._agrees(cls, tuple(field for field in orders.FIELDS if field.request))


# `client_order_id` (SPEC 3.1), declared as `orders.CLIENT_ORDER_ID`: the declaration without it and with it.

WITHOUT = tuple(field for field in orders.FIELDS if field is not orders.CLIENT_ORDER_ID)
WITH = (*WITHOUT, orders.CLIENT_ORDER_ID)
CLIENT_ORDER_ID = TypeAdapter(ClientOrderId)  # as the request, the resource and the event take it


@pytest.mark.parametrize("text", ["shop-42/A", "x", " ", "~" * 64, "".join(chr(c) for c in range(0x20, 0x5F))])
def test_a_client_order_id_is_printable_ascii_of_1_to_64_characters(text: str) -> None:
    assert CLIENT_ORDER_ID.validate_python(text) == text
    assert re.fullmatch(orders.CLIENT_ORDER_ID_PATTERN[1:-1], text)


@pytest.mark.parametrize("value", ["", "x" * 65, "tab\there", "é", "line\n", "\x7f", 42, None])
def test_anything_else_is_not_a_client_order_id(value: object) -> None:
    with pytest.raises(ValidationError):
        CLIENT_ORDER_ID.validate_python(value)
    assert not (isinstance(value, str) and re.fullmatch(orders.CLIENT_ORDER_ID_PATTERN[1:-1], value))


def test_with_client_order_id_the_resource_and_event_end_as_the_spec_says() -> None:
    served = [field.name for field in orders.resource_fields(WITH)]
    assert served == [*(field.name for field in orders.resource_fields(WITHOUT)), "client_order_id"]
    assert [field.name for field in orders.event_fields(WITH)] == [*served, "sequence"]
    assert orders.CLIENT_ORDER_ID.json(None) is None
    assert orders.CLIENT_ORDER_ID.python_type == (str | None)


def test_an_order_class_with_client_order_id_agrees_with_the_declaration_that_has_it() -> None:
    @dataclass(frozen=True)
    class NextRequest:
        currency: Currency
        amount: Decimal
        idempotence_key: uuid.UUID
        client_order_id: str | None = None

    orders._agrees(NextRequest, tuple(field for field in WITH if field.request))


def test_an_optional_field_a_mapping_lacks_is_null_any_other_is_an_error() -> None:
    published = {**ORDER.event_order(), "created_at": ORDER.created_at}
    del published["client_order_id"]
    assert orders.resource_of(published) == {**ORDER.resource(), "client_order_id": None}
    del published["amount"]
    with pytest.raises(KeyError):
        orders.resource_of(published)


def test_an_insert_writes_the_request_and_the_price_and_reads_back_the_order() -> None:
    request = OrderRequest(Currency.USD, Decimal("10.50"), KEY, "shop-42/A")
    values = orders.new_order(request, ORDER.id, Decimal("97012.340"), Decimal("0.00010824"))
    assert set(values) == set(orders.INSERTED_COLUMNS)
    assert BuyOrder.from_row({**values, "sequence": 7, "created_at": ORDER.created_at}) == ORDER
