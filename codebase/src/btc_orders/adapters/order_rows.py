"""Stored orders as `BuyOrder`s: the write model's `buy_order` columns every reader selects, and the
mapping, both by name from the order's one declaration (`domain.orders.FIELDS`)."""

from collections.abc import Mapping
from typing import Any

from btc_orders.domain import orders
from btc_orders.domain.orders import BuyOrder

# What is selected of a `buy_order` row to make a `BuyOrder` (`prefixed` for a join), read back by name.
ORDER_COLUMNS = orders.columns()


def prefixed(alias: str) -> str:
    """`ORDER_COLUMNS` of the table named `alias` in a join."""
    return orders.columns(alias)


def order_from_row(row: Any) -> BuyOrder:
    """The order of a row holding `ORDER_COLUMNS` by name: a mapping (psycopg's `dict_row`) or
    SQLAlchemy's row (its `_mapping`); other columns are ignored."""
    return BuyOrder.from_row(row if isinstance(row, Mapping) else row._mapping)
