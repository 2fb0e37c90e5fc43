"""Buy orders: the resource, the currencies, and the idempotence rule."""

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from btc_orders.domain import money


class Currency(enum.StrEnum):
    """Fiat currencies an order can be placed in (ISO 4217 codes)."""

    EUR = "EUR"
    GBP = "GBP"
    USD = "USD"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What a client asks for: validated, not yet priced."""

    currency: Currency
    amount: Decimal
    idempotence_key: uuid.UUID


@dataclass(frozen=True, slots=True)
class BuyOrder:
    """A stored order. Orders are immutable once stored."""

    id: uuid.UUID
    sequence: int
    created_at: datetime
    currency: Currency
    amount: Decimal
    exchange_rate: Decimal
    bitcoin_amount: Decimal
    idempotence_key: uuid.UUID

    def matches(self, request: OrderRequest) -> bool:
        """The idempotence rule: a key may be replayed only with the same order.

        Amounts compare by value, so `"10.5"` replays an order stored as `10.50`.
        """
        return self.currency == request.currency and self.amount == request.amount

    def resource(self) -> dict[str, Any]:
        """The order resource of the API (SPEC 3.3): money as decimal strings."""
        return resource(
            self.id,
            self.created_at,
            self.currency.value,
            money.format_fiat(self.amount),
            money.format_rate(self.exchange_rate),
            money.format_btc(self.bitcoin_amount),
            self.idempotence_key,
        )


# The order resource's fields in the order the API serves them: the one definition of the order's
# shape. The read model's stored document is rendered by `resource` (and so is the event's
# `order`, plus its `sequence`); the SQL function of read-model migration 0002 is tested against
# it byte for byte (tests/integration/test_order_rendering.py renders one order every way).
RESOURCE_FIELDS = ("id", "created_at", "currency", "amount", "exchange_rate", "bitcoin_amount", "idempotence_key")


def resource(
    order_id: uuid.UUID | str,
    created_at: datetime,
    currency: str,
    amount: str,
    exchange_rate: str,
    bitcoin_amount: str,
    idempotence_key: uuid.UUID | str,
) -> dict[str, Any]:
    """The order resource from its fields, money already as the API's decimal strings."""
    return {
        "id": str(order_id),
        "created_at": format_timestamp(created_at),
        "currency": currency,
        "amount": amount,
        "exchange_rate": exchange_rate,
        "bitcoin_amount": bitcoin_amount,
        "idempotence_key": str(idempotence_key),
    }


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a `Z`: `2026-11-24T12:00:00.123456Z`."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
