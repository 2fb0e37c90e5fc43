"""Prometheus metrics, one definition for every process.

HTTP services serve `/metrics`; under gunicorn (several worker processes) the
figures of every worker are added up through prometheus-client's multiprocess
mode, switched on by `PROMETHEUS_MULTIPROC_DIR` (set by `docker/gunicorn.conf.py`).
The relay and the worker serve them on `METRICS_PORT`. Figures that live in a
database (the cap) are read at scrape time by a collector, never kept in memory.
"""

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine, Iterable
from decimal import Decimal
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests answered", ["service", "route", "method", "status"])
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["service", "route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ORDERS_CREATED = Counter("buy_orders_created_total", "Orders stored", ["currency"])
ORDERS_REPLAYED = Counter("buy_orders_replayed_total", "Requests answered with an order their key already named")
ORDERS_REJECTED = Counter("buy_orders_rejected_total", "Order requests refused, by error code", ["code"])
RATE_CACHE_HITS = Counter("rate_cache_hits_total", "Rates served from btc_price's cache", ["currency"])
RATE_CACHE_MISSES = Counter("rate_cache_misses_total", "Rates btc_price had to ask Coinbase for", ["currency"])
RATE_UPSTREAM_FAILURES = Counter("rate_upstream_failures_total", "Coinbase calls that gave no rate", ["currency"])
EVENTS_PUBLISHED = Counter("events_published_total", "Outbox events sent to the broker")
EVENTS_CONFIRMED = Counter("events_confirmed_total", "Outbox events the broker confirmed (and marked sent)")
EVENTS_APPLIED = Counter("events_applied_total", "Events projected into the read model")
EVENTS_REDELIVERED = Counter("events_redelivered_total", "Events that arrived again after a failure")
EVENTS_DEAD_LETTERED = Counter("events_dead_lettered_total", "Messages rejected to the dead-letter queue")
OUTBOX_PRUNED = Counter("outbox_pruned_total", "Sent outbox rows deleted after the retention period")
OUTBOX_BACKLOG = Gauge("outbox_backlog", "Outbox rows not yet confirmed by the broker", multiprocess_mode="max")
OUTBOX_OLDEST_AGE = Gauge(
    "outbox_oldest_unsent_age_seconds", "Age of the oldest unsent outbox row", multiprocess_mode="max"
)
WRITE_MODEL_MAX_SEQUENCE = Gauge(
    "write_model_max_sequence", "Highest order sequence in the write model", multiprocess_mode="max"
)
READ_MODEL_MAX_SEQUENCE = Gauge(
    "read_model_max_sequence", "Highest order sequence in the read model", multiprocess_mode="max"
)


_http_children: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = {}


def observe_http(service: str, route: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request and its duration. The labelled children are looked up once per
    label set and kept (`.labels()` takes a lock and builds the key on every call)."""
    key = (service, route, method, status)
    children = _http_children.get(key)
    if children is None:
        children = _http_children[key] = (
            HTTP_REQUESTS.labels(service, route, method, str(status)),
            HTTP_DURATION.labels(service, route, method),
        )
    children[0].inc()
    children[1].observe(seconds)


_T = TypeVar("_T")


def on_loop(
    loop: asyncio.AbstractEventLoop, read: Callable[[], Coroutine[Any, Any, _T]], timeout_seconds: float
) -> Callable[[], _T | None]:
    """`read()` awaited on `loop` for a collector called on another thread (a scrape renders the
    figures on a thread of its own): that thread waits, at most `timeout_seconds`, never the loop.
    None when called on the loop's own thread (it cannot wait for itself)."""
    owner = threading.get_ident()

    def blocking_read() -> _T | None:
        if threading.get_ident() == owner or loop.is_closed():
            return None
        future = asyncio.run_coroutine_threadsafe(read(), loop)
        try:
            return future.result(timeout_seconds)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    return blocking_read


class CapCollector(Collector):
    """`btc_cap_btc` and `btc_cap_remaining_btc`, read from the ledger at scrape time."""

    def __init__(self, read: Callable[[], tuple[Decimal, Decimal] | None]) -> None:
        self._read = read

    def describe(self) -> Iterable[GaugeMetricFamily]:
        """The gauges' names, without reading them (what a registry asks when the collector is registered)."""
        yield GaugeMetricFamily("btc_cap_btc", "The configured BTC cap")
        yield GaugeMetricFamily("btc_cap_remaining_btc", "BTC still available under the cap")

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            status = self._read()
        except Exception:  # a scrape during an outage reports nothing rather than failing
            return
        if status is None:
            return
        cap, remaining = status
        # Prometheus values are floats: fine for a dashboard, never used for money.
        yield GaugeMetricFamily("btc_cap_btc", "The configured BTC cap", value=float(cap))
        yield GaugeMetricFamily("btc_cap_remaining_btc", "BTC still available under the cap", value=float(remaining))


_extra_collectors: list[Collector] = []


def register(collector: Collector) -> None:
    _extra_collectors.append(collector)
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        REGISTRY.register(collector)


def unregister(collector: Collector) -> None:
    """Undo `register` (the app that registered it stops)."""
    if collector in _extra_collectors:
        _extra_collectors.remove(collector)
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            REGISTRY.unregister(collector)


def exposition() -> tuple[bytes, str]:
    """The text to answer a scrape with, and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        for collector in _extra_collectors:
            registry.register(collector)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve(port: int) -> None:
    """Serve `/metrics` on `port` from a background thread (workers); 0 disables it."""
    if port:
        start_http_server(port, addr="0.0.0.0")
