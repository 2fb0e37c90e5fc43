"""bench/paging.py's data and SQL: the loaded history, the depths, and the OFFSET page read straight
from Postgres (the contrast: its cost grows with the depth, a keyset page's must not).

Orders 1..N; the newest (sequence N) comes first. Orders 30 s apart (a million span about a year),
each `created_at` up to 45 s late: out of sequence order, as transactions that start before they
draw their sequence make them. GBP is 1% of the orders, EUR a third.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from benchkit import log

PAGE_SIZE = 10
GOAL_RATIO = 1.10  # a deep page's p99 within 10% of the shallow page's
ORDER_SPACING_S = 30
HISTORY_START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SQL_OFFSET = "SELECT id::text FROM buy_order_view ORDER BY sequence DESC LIMIT %s OFFSET %s"
SQL_LOAD = """
INSERT INTO buy_order_view
    (sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount, idempotence_key, event_id, applied_at)
SELECT g,
       gen_random_uuid(),
       timestamptz '2026-01-01 00:00:00+00' + g * interval '30 seconds' + ((g * 37) %% 7) * interval '7.5 seconds',
       CASE WHEN g %% 100 = 0 THEN 'GBP' WHEN g %% 3 = 0 THEN 'EUR' ELSE 'USD' END,
       ((g %% 9900) + 100)::text || '.' || lpad((g %% 100)::text, 2, '0'),
       '97012.34',
       round((((g %% 9900) + 100) + (g %% 100) / 100.0) / 97012.34, 8)::text,
       gen_random_uuid(),
       gen_random_uuid(),
       timestamptz '2026-01-01 00:00:01+00' + g * interval '1 second'
FROM generate_series(%s::bigint, %s::bigint) AS g
"""


def one(cursor: psycopg.Cursor[Any], sql: str, params: tuple[Any, ...] | list[Any] = ()) -> Any:
    """The first column of the one row of `sql`."""
    row = cursor.execute(sql, params).fetchone()
    assert row is not None, sql
    return row[0]


def load_orders(db_url: str, orders: int, chunk: int = 250_000) -> float:
    started = time.perf_counter()
    with psycopg.connect(db_url, application_name="bench_paging_load") as connection:
        connection.execute("SET synchronous_commit = off")
        for low in range(1, orders + 1, chunk):
            high = min(orders, low + chunk - 1)
            connection.execute(SQL_LOAD, (low, high))
            connection.commit()
            log(f"loaded {high:,}/{orders:,} orders ({time.perf_counter() - started:.1f}s)")
        connection.autocommit = True
        connection.execute("VACUUM ANALYZE buy_order_view")
    return time.perf_counter() - started


@dataclass(frozen=True)
class Depth:
    """A page `skip` rows below the newest order; `reference` is the id of the row just above it."""

    label: str
    skip: int
    reference: str | None = None


def choose_depths(cursor: psycopg.Cursor[Any], orders: int, count: int) -> list[Depth]:
    """`count` evenly spaced depths from the first page to the last, plus the second and the middle page."""
    last, middle = orders - PAGE_SIZE, orders // 2
    skips = sorted({min(round(orders * i / (count - 1)), last) for i in range(count)} | {PAGE_SIZE, middle})
    labels = {0: "first", PAGE_SIZE: "second", middle: "middle", last: "last"}
    # The reference of a page `skip` rows deep is the id of sequence N - skip + 1.
    wanted = [orders - skip + 1 for skip in skips if skip]
    cursor.execute("SELECT sequence, id::text FROM buy_order_view WHERE sequence = ANY(%s)", (wanted,))
    ids = dict(cursor.fetchall())
    return [Depth(labels.get(s, f"{s:,}"), s, ids.get(orders - s + 1)) for s in skips]


def offset_page(cursor: psycopg.Cursor[Any], depth: Depth) -> list[str]:
    cursor.execute(SQL_OFFSET, (PAGE_SIZE + 1, depth.skip))
    return [row[0] for row in cursor.fetchall()[:PAGE_SIZE]]
