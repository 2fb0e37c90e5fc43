"""Stored orders as `BuyOrder`s: the write model's `buy_order` columns every reader selects, and the mapping."""

from datetime import datetime
from typing import Any

from btc_orders.domain.orders import BuyOrder, Currency

# What is selected of a `buy_order` row to make a `BuyOrder` (`prefixed` for a join), read back by name.
ORDER_FIELDS = (
    "sequence",
    "id",
    "created_at",
    "currency",
    "amount",
    "exchange_rate",
    "bitcoin_amount",
    "idempotence_key",
)
ORDER_COLUMNS = ", ".join(ORDER_FIELDS)


def prefixed(alias: str) -> str:
    """`ORDER_COLUMNS` of the table named `alias` in a join."""
    return ", ".join(f"{alias}.{field}" for field in ORDER_FIELDS)


def order_from_row(row: Any, sequence: int | None = None, created_at: datetime | None = None) -> BuyOrder:
    """The order of a row holding `ORDER_FIELDS` as attributes (SQLAlchemy's rows, psycopg's `namedtuple_row`)."""
    return BuyOrder(
        id=row.id,
        sequence=row.sequence if sequence is None else sequence,
        created_at=row.created_at if created_at is None else created_at,
        currency=Currency(row.currency),
        amount=row.amount,
        exchange_rate=row.exchange_rate,
        bitcoin_amount=row.bitcoin_amount,
        idempotence_key=row.idempotence_key,
    )
