"""bench/paging.py's pages through the service (plain, filtered, the newer direction), each checked
against plain SQL, and the timing loop (interleaved round-robin, so that machine noise falls on every
page alike)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg

from benchkit.paging_sql import HISTORY_START, ORDER_SPACING_S, PAGE_SIZE, one


@dataclass(frozen=True)
class Case:
    """A page through the service: its label, its query (filters and reference), its ids (from SQL)."""

    label: str
    params: tuple[tuple[str, str], ...]
    expected: tuple[str, ...] = ()


def http_page(client: httpx.Client, params: Sequence[tuple[str, str]]) -> list[str]:
    response = client.get("/buy_orders", params=[("page_size", str(PAGE_SIZE)), *params])
    if response.status_code != 200:
        raise RuntimeError(f"GET /buy_orders {params} -> {response.status_code}: {response.text[:300]}")
    return [order["id"] for order in response.json()["buy_orders"]]


def filtered_cases(cursor: psycopg.Cursor[Any], orders: int) -> tuple[list[Case], list[tuple[str, str, str]]]:
    """The filtered pages to time, and the ratios (name, numerator, denominator) the goals are on.
    Every expected page is computed with plain SQL (`OFFSET` over the filtered set)."""
    day = dt.timedelta(days=1)
    newest = HISTORY_START + dt.timedelta(seconds=orders * ORDER_SPACING_S)
    start, first_day, first_week = (HISTORY_START + n * day for n in (0, 1, 7))
    filters: dict[str, list[tuple[str, str]]] = {
        "GBP (1%)": [("currency", "GBP")],
        "EUR + GBP": [("currency", "EUR"), ("currency", "GBP")],
        "far-past day": [("created_gte", start.isoformat()), ("created_lt", first_day.isoformat())],
        "newest day": [("created_gte", (newest - day).isoformat())],
        "GBP, far-past week": [
            ("currency", "GBP"), ("created_gte", start.isoformat()), ("created_lt", first_week.isoformat()),
        ],
    }  # fmt: skip

    def where(params: list[tuple[str, str]]) -> tuple[str, list[Any]]:
        parts: list[str] = ["true"]
        values: list[Any] = []
        if currencies := [value for name, value in params if name == "currency"]:
            parts.append("currency = ANY(%s)")
            values.append(currencies)
        for name, op in (("created_gte", ">="), ("created_lt", "<")):
            for key, value in params:
                if key == name:
                    parts.append(f"created_at {op} %s::timestamptz")
                    values.append(value)
        return " AND ".join(parts), values

    def page_at(params: list[tuple[str, str]], skip: int) -> tuple[str, ...]:
        clause, values = where(params)
        sql = f"SELECT id::text FROM buy_order_view WHERE {clause} ORDER BY sequence DESC OFFSET %s LIMIT %s"
        cursor.execute(sql, (*values, skip, PAGE_SIZE))
        return tuple(row[0] for row in cursor.fetchall())

    def total(params: list[tuple[str, str]]) -> int:
        clause, values = where(params)
        return int(one(cursor, f"SELECT count(*) FROM buy_order_view WHERE {clause}", values))

    cases: list[Case] = []
    ratios: list[tuple[str, str, str]] = []
    for name, params in filters.items():
        count = total(params)
        if count < 3 * PAGE_SIZE:
            raise SystemExit(f"the filter {name} selects only {count} orders")
        last_skip = count - PAGE_SIZE
        first = Case(f"{name}: first page", tuple(params), page_at(params, 0))
        # the second page runs what every deeper page runs (a reference to look up): like for like
        second_ref = ("last_reference", page_at(params, PAGE_SIZE - 1)[0])
        second = Case(f"{name}: second page", (*params, second_ref), page_at(params, PAGE_SIZE))
        last_ref = ("last_reference", page_at(params, last_skip - 1)[0])
        last = Case(f"{name}: last page", (*params, last_ref), page_at(params, last_skip))
        cases += [first, second, last]
        ratios.append((f"{name}: last / first page", last.label, first.label))
        ratios.append((f"{name}: last / second page", last.label, second.label))
    ratios.append(("far-past day / newest day (first pages)", "far-past day: first page", "newest day: first page"))
    # the newer direction: the page just above the oldest order against the page just above the newest page
    for name, params in (("unfiltered", []), ("GBP (1%)", [("currency", "GBP")])):
        count = total(params)
        deep_ref = ("first_reference", page_at(params, count - 1)[0])
        deep = Case(f"{name}, newer: above the oldest", (*params, deep_ref), page_at(params, count - 1 - PAGE_SIZE))
        top_ref = ("first_reference", page_at(params, PAGE_SIZE)[0])
        top = Case(f"{name}, newer: the newest page", (*params, top_ref), page_at(params, 0))
        cases += [deep, top]
        ratios.append((f"{name}, newer direction: deepest / top", deep.label, top.label))
    return cases, ratios


def interleaved(labels: list[str], fetch: Callable[[str], Any], warmup: int, requests: int) -> dict[str, list[float]]:
    """Round-robin over `labels`: `warmup` unrecorded rounds, then `requests` recorded ones (ms)."""
    results: dict[str, list[float]] = {label: [] for label in labels}
    for round_number in range(warmup + requests):
        for label in labels:
            started = time.perf_counter()
            fetch(label)
            if round_number >= warmup:
                results[label].append((time.perf_counter() - started) * 1000)
    return results
