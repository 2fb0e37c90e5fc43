"""bench/paging.py's data and SQL: the loaded history, the depths, and the pages read straight from
Postgres (keyset as the first design ran it, keyset in one statement, OFFSET) to compare with the
service's own (which answers every page, first or deep, with one statement: adapters/read_model.py).

Orders 1..N; the newest (sequence N) comes first. One INSERT per chunk. Orders 30 s apart (a
million span about a year), each `created_at` up to 45 s late: out of sequence order, as
transactions that start before they draw their sequence make them. GBP is 1% of the orders.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import psycopg2

from benchkit import log

PAGE_SIZE = 10
GOAL_RATIO = 1.10  # last-page p99 within 10% of the first page's
COLUMNS = "sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount, idempotence_key"

# The row statements of the first design, two round trips for a page with a reference (the service
# now runs one statement that also aggregates the stored documents; "keyset via HTTP" times what it
# runs), page_size + 1 rows for has_more.
SQL_SEQUENCE_OF = "SELECT sequence FROM buy_order_view WHERE id = %s"
SQL_FIRST_PAGE = f"SELECT {COLUMNS} FROM buy_order_view ORDER BY sequence DESC LIMIT %s"
SQL_PAGE_AFTER = f"SELECT {COLUMNS} FROM buy_order_view WHERE sequence < %s ORDER BY sequence DESC LIMIT %s"
SQL_OFFSET = f"SELECT {COLUMNS} FROM buy_order_view ORDER BY sequence DESC LIMIT %s OFFSET %s"
# The reference lookup and the page in one round trip (the service's shape, minus its aggregation). No row at
# all means an unknown reference; one all-NULL row means a known reference with nothing after it.
SQL_ONE_STATEMENT = f"""
SELECT page.* FROM (SELECT sequence FROM buy_order_view WHERE id = %s) AS ref
LEFT JOIN LATERAL (
    SELECT {COLUMNS} FROM buy_order_view WHERE sequence < ref.sequence ORDER BY sequence DESC LIMIT %s
) AS page ON true
"""
METHODS = ("keyset via HTTP", "keyset SQL", "keyset SQL, one statement", "OFFSET SQL")

ORDER_SPACING_S = 30
HISTORY_START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
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
FROM generate_series(%s, %s) AS g
"""


def load_orders(db_url: str, orders: int, chunk: int = 250_000) -> float:
    started = time.perf_counter()
    connection = psycopg2.connect(db_url, application_name="bench_paging_load")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit = off")
            for low in range(1, orders + 1, chunk):
                high = min(orders, low + chunk - 1)
                cursor.execute(SQL_LOAD, (low, high))
                connection.commit()
                log(f"loaded {high:,}/{orders:,} orders ({time.perf_counter() - started:.1f}s)")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE buy_order_view")
    finally:
        connection.close()
    return time.perf_counter() - started


def ids_by_sequence(cursor: Any, sequences: list[int]) -> dict[int, str]:
    cursor.execute("SELECT sequence, id::text FROM buy_order_view WHERE sequence = ANY(%s)", (sequences,))
    return dict(cursor.fetchall())


def buffers_touched(cursor: Any, sql: str, params: tuple[Any, ...]) -> int:
    """Shared buffers (hit + read) of one execution, from EXPLAIN (ANALYZE, BUFFERS)."""
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
    plan = cursor.fetchone()[0][0]["Plan"]
    return int(plan.get("Shared Hit Blocks", 0)) + int(plan.get("Shared Read Blocks", 0))


@dataclass(frozen=True)
class Depth:
    """A page `skip` rows below the newest order; `reference` is the id of the row just above it."""

    label: str
    skip: int
    reference: str | None


def one_statement_page(cursor: Any, depth: Depth) -> list[str]:
    if depth.reference is None:
        cursor.execute(SQL_FIRST_PAGE, (PAGE_SIZE + 1,))
    else:
        cursor.execute(SQL_ONE_STATEMENT, (depth.reference, PAGE_SIZE + 1))
    return [str(row[1]) for row in cursor.fetchall()[:PAGE_SIZE] if row[1] is not None]


def keyset_sql_page(cursor: Any, depth: Depth) -> list[str]:
    if depth.reference is None:
        cursor.execute(SQL_FIRST_PAGE, (PAGE_SIZE + 1,))
    else:
        cursor.execute(SQL_SEQUENCE_OF, (depth.reference,))
        (after,) = cursor.fetchone()
        cursor.execute(SQL_PAGE_AFTER, (after, PAGE_SIZE + 1))
    return [str(row[1]) for row in cursor.fetchall()[:PAGE_SIZE]]


def offset_sql_page(cursor: Any, depth: Depth) -> list[str]:
    cursor.execute(SQL_OFFSET, (PAGE_SIZE + 1, depth.skip))
    return [str(row[1]) for row in cursor.fetchall()[:PAGE_SIZE]]


def choose_depths(orders: int, count: int) -> tuple[list[Depth], list[Depth]]:
    """`count` evenly spaced depths from the first page to the last, plus the middle page."""
    last_skip = orders - PAGE_SIZE
    middle_skip = orders // 2
    skips = sorted({min(round(orders * i / (count - 1)), last_skip) for i in range(count)} | {middle_skip})
    skips = sorted(set(skips) | {PAGE_SIZE})
    labels = {0: "first", PAGE_SIZE: "second", middle_skip: "middle", last_skip: "last"}
    depths = [Depth(labels.get(skip, f"depth {skip}"), skip, None) for skip in skips]
    return depths, [d for d in depths if d.skip in labels]
