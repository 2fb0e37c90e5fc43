"""Stored orders as `BuyOrder`s: the write model's `buy_order` columns every reader selects, and the
mapping, both by name from the order's one declaration (`domain.orders.FIELDS`); and what it means
when the write model's schema refuses an order's value that the code accepted."""

import logging
from collections.abc import Mapping
from typing import Any

from btc_orders import logs
from btc_orders.adapters import db
from btc_orders.domain import orders
from btc_orders.domain.errors import ServiceUnavailable
from btc_orders.domain.orders import BuyOrder

log = logging.getLogger(__name__)

# What is selected of a `buy_order` row to make a `BuyOrder` (`prefixed` for a join), read back by name.
ORDER_COLUMNS = orders.columns()


def prefixed(alias: str) -> str:
    """`ORDER_COLUMNS` of the table named `alias` in a join."""
    return orders.columns(alias)


def order_from_row(row: Any) -> BuyOrder:
    """The order of a row holding `ORDER_COLUMNS` by name: a mapping (psycopg's `dict_row`) or
    SQLAlchemy's row (its `_mapping`); other columns are ignored."""
    return BuyOrder.from_row(row if isinstance(row, Mapping) else row._mapping)


CHECK_VIOLATION = "23514"
# A column's CHECK constraint as Postgres names it (`<table>_<column>_check`), as the write model's
# migrations leave it: the order's column it guards.
_CHECKED_COLUMNS = {f"buy_order_{name}_check": name for name in orders.COLUMNS}
# How long a client waits before it tries again: a migration being rolled out, not a blip.
SCHEMA_GAP_RETRY_SECONDS = 10
_logged: set[str] = set()


def schema_gap(error: BaseException) -> ServiceUnavailable | None:
    """A `buy_order` row refused by the CHECK constraint of one of the order's own columns (SQLSTATE
    23514), as the 503 it is; None for any other error.

    The code validated every value before it wrote the row (a value of the client's own that the
    API refuses is a 422 long before), so such a refusal means the write model's schema does not
    accept that value yet: code that knows a new currency deployed before its migration, say. A
    deployment gap, not the client's error: the statement stored nothing and the key stays unused,
    so the client retries later. Logged as an error once per constraint (per process), not per order.
    """
    if db.sqlstate(error) != CHECK_VIOLATION:
        return None
    diag = getattr(getattr(error, "orig", None) or error, "diag", None)
    if diag is None or diag.table_name != "buy_order" or diag.constraint_name not in _CHECKED_COLUMNS:
        return None
    constraint: str = diag.constraint_name
    column = _CHECKED_COLUMNS[constraint]
    if constraint not in _logged:
        _logged.add(constraint)
        logs.event(
            log,
            "order_refused_by_schema",
            logging.ERROR,
            column=column,
            constraint=constraint,
            reason=db.first_line(error),
            action="run the write model's migrations: the code accepts values its schema does not yet",
        )
    return ServiceUnavailable(
        f"the write model's schema does not accept this order's {column} yet (a deployment is under way); "
        "nothing was stored: retry later with the same idempotence_key",
        retry_after=SCHEMA_GAP_RETRY_SECONDS,
    )
