"""bench/paging.py's pages through the service (plain, filtered, the newer direction), each checked
against plain SQL, and the timing loops (interleaved round-robin, or per depth within a budget)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from benchkit import log
from benchkit.paging_sql import HISTORY_START, ORDER_SPACING_S, PAGE_SIZE, Depth
from benchkit.stats import Samples


def timed(action: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action(*args)
    return (time.perf_counter() - started) * 1000, result


def http_page(client: httpx.Client, depth: Depth) -> list[str]:
    params: dict[str, Any] = {"page_size": PAGE_SIZE}
    if depth.reference is not None:
        params["last_reference"] = depth.reference
    response = client.get("/buy_orders", params=params)
    if response.status_code != 200:
        raise RuntimeError(f"GET /buy_orders {params} -> {response.status_code}: {response.text[:300]}")
    return [order["id"] for order in response.json()["buy_orders"]]


@dataclass(frozen=True)
class Case:
    """A filtered (or backward) page through the service: `params` plus a reference, if any."""

    label: str
    params: tuple[tuple[str, str], ...]
    reference: tuple[str, str] | None  # ("last_reference" | "first_reference", id)
    expected: tuple[str, ...]  # the page's ids, computed in SQL


def filtered_cases(cursor: Any, orders: int) -> tuple[list[Case], list[tuple[str, str, str]]]:
    """The filtered pages to time, and the ratios (name, numerator, denominator) the goals are on.

    Every expected page is computed with plain SQL (`OFFSET` over the filtered set), so the
    service's answers are checked before they are timed.
    """
    day = dt.timedelta(days=1)
    newest = HISTORY_START + dt.timedelta(seconds=orders * ORDER_SPACING_S)
    filters: dict[str, list[tuple[str, str]]] = {
        "GBP (1% of orders)": [("currency", "GBP")],
        "EUR + GBP": [("currency", "EUR"), ("currency", "GBP")],
        "far-past day": [("created_gte", HISTORY_START.isoformat()), ("created_lt", (HISTORY_START + day).isoformat())],
        "newest day": [("created_gte", (newest - day).isoformat())],
        "GBP in the far-past week": [
            ("currency", "GBP"),
            ("created_gte", HISTORY_START.isoformat()),
            ("created_lt", (HISTORY_START + 7 * day).isoformat()),
        ],
    }
    cases: list[Case] = []
    ratios: list[tuple[str, str, str]] = []

    def where(params: list[tuple[str, str]]) -> tuple[str, list[Any]]:
        parts: list[str] = ["true"]
        values: list[Any] = []
        currencies = [value for name, value in params if name == "currency"]
        if currencies:
            parts.append("currency = ANY(%s)")
            values.append(currencies)
        for name, op in (("created_gte", ">="), ("created_lt", "<")):
            for key, value in params:
                if key == name:
                    parts.append(f"created_at {op} %s")
                    values.append(value)
        return " AND ".join(parts), values

    def page_at(params: list[tuple[str, str]], skip: int) -> tuple[str, ...]:
        clause, values = where(params)
        cursor.execute(
            f"SELECT id::text FROM buy_order_view WHERE {clause} ORDER BY sequence DESC OFFSET %s LIMIT %s",
            (*values, skip, PAGE_SIZE),
        )
        return tuple(row[0] for row in cursor.fetchall())

    for name, params in filters.items():
        clause, values = where(params)
        cursor.execute(f"SELECT count(*) FROM buy_order_view WHERE {clause}", values)
        (count,) = cursor.fetchone()
        if count < 3 * PAGE_SIZE:
            raise SystemExit(f"the filter {name} selects only {count} orders")
        last_skip = count - PAGE_SIZE
        reference = page_at(params, last_skip - 1)[0]
        first = Case(f"{name}: first page", tuple(params), None, page_at(params, 0))
        # the second page runs the statement every deeper page runs (with a reference): the
        # like-for-like measure of depth; the first page has no reference to look up
        second_reference = page_at(params, PAGE_SIZE - 1)[0]
        second = Case(
            f"{name}: second page", tuple(params), ("last_reference", second_reference), page_at(params, PAGE_SIZE)
        )
        last = Case(f"{name}: last page", tuple(params), ("last_reference", reference), page_at(params, last_skip))
        cases += [first, second, last]
        ratios.append((f"{name}, last ÷ first page", last.label, first.label))
        ratios.append((f"{name}, last ÷ second page (like for like)", last.label, second.label))
    far, near = "far-past day: first page", "newest day: first page"
    ratios.append(("far-past day ÷ newest day (first pages)", far, near))

    # the newer direction: the page just above the oldest order, against the page just above the
    # newest page (both served newest first)
    for name, params in (("unfiltered", []), ("GBP (1% of orders)", [("currency", "GBP")])):
        clause, values = where(params)
        cursor.execute(f"SELECT count(*) FROM buy_order_view WHERE {clause}", values)
        (count,) = cursor.fetchone()
        oldest = page_at(params, count - 1)[0]
        below_top = page_at(params, PAGE_SIZE)[0]
        deep = Case(
            f"{name}, newer: above the oldest", tuple(params), ("first_reference", oldest),
            page_at(params, count - 1 - PAGE_SIZE),
        )  # fmt: skip
        top = Case(f"{name}, newer: the newest page", tuple(params), ("first_reference", below_top), page_at(params, 0))
        cases += [deep, top]
        ratios.append((f"{name}, newer direction: deepest ÷ top", deep.label, top.label))
    return cases, ratios


def case_page(client: httpx.Client, case: Case) -> list[str]:
    params: list[tuple[str, str | int | float | bool | None]] = [("page_size", PAGE_SIZE), *case.params]
    if case.reference:
        params.append(case.reference)
    response = client.get("/buy_orders", params=params)
    if response.status_code != 200:
        raise RuntimeError(f"GET /buy_orders {params} -> {response.status_code}: {response.text[:300]}")
    return [order["id"] for order in response.json()["buy_orders"]]


def interleaved(depths: list[Depth], fetch: Callable[[Depth], Any], warmup: int, requests: int) -> dict[str, Samples]:
    """Round-robin over the depths, `warmup` unrecorded rounds, then `requests` recorded ones."""
    results = {depth.label: Samples() for depth in depths}
    for round_number in range(warmup + requests):
        for depth in depths:
            elapsed, _ = timed(fetch, depth)
            if round_number >= warmup:
                results[depth.label].values_ms.append(elapsed)
    return results


def budgeted(
    depths: list[Depth], fetch: Callable[[Depth], Any], warmup: int, requests: int, budget_s: float, minimum: int
) -> dict[str, Samples]:
    """Per depth: a few warm-up calls, then up to `requests` samples or `budget_s` seconds (at least `minimum`)."""
    results = {}
    for depth in depths:
        for _ in range(min(warmup, 5)):
            fetch(depth)
        samples = Samples()
        started = time.monotonic()
        while samples.n < requests and (samples.n < minimum or time.monotonic() - started < budget_s):
            elapsed, _ = timed(fetch, depth)
            samples.values_ms.append(elapsed)
        results[depth.label] = samples
        log(f"  OFFSET {depth.skip:>9,}: n={samples.n:4d} p50={samples.p50:8.2f} ms p99={samples.p99:8.2f} ms")
    return results
