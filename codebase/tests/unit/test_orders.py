"""The order resource and the idempotence rule."""

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from btc_orders.domain.orders import BuyOrder, Currency, OrderRequest, format_timestamp

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
)


def test_same_key_same_currency_and_amount_is_a_replay() -> None:
    assert ORDER.matches(OrderRequest(Currency.USD, Decimal("10.5"), KEY))


@pytest.mark.parametrize(
    "request_", [OrderRequest(Currency.EUR, Decimal("10.50"), KEY), OrderRequest(Currency.USD, Decimal("10.51"), KEY)]
)
def test_same_key_other_currency_or_amount_is_not_a_replay(request_: OrderRequest) -> None:
    assert not ORDER.matches(request_)


def test_resource_carries_money_as_exact_decimal_strings() -> None:
    resource = ORDER.resource()
    assert resource["amount"] == "10.50"
    assert resource["exchange_rate"] == "97012.340"
    assert resource["bitcoin_amount"] == "0.00010824"
    assert resource["created_at"] == "2026-11-24T12:00:00.123456Z"


def test_timestamps_are_rfc3339_utc() -> None:
    moment = datetime(2026, 11, 24, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert format_timestamp(moment) == "2026-11-24T12:00:00.000000Z"
