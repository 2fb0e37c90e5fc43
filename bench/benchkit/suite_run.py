"""The state of one bench/suite.py run, shared by its phases (benchkit.suite_write, suite_read):
throwaway databases and vhost, the fake Coinbase with a timestamp per call, btc_price, the
processes, and the results dict every phase adds its figures to (the report reads only that)."""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from benchkit import pg
from benchkit.services import Proc, Processes
from benchkit.stores import amqp_url, stores
from tests.support.fake_coinbase import FakeCoinbase

RATE_TTL_SECONDS = 2.0
DEFAULT_POOL_SIZE = 20  # DB_POOL_SIZE's default in btc_orders.settings
POOL_VARIANTS = (10, 40)
DRAIN_BASE_SEQUENCE = 1_000_000_000  # the drain's events, far above the orders the runs make


class TimedCalls(collections.Counter[str]):
    """The fake Coinbase's call counter, with a (monotonic time, currency) stamp for every call."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[tuple[float, str]] = []

    def __setitem__(self, key: str, value: int) -> None:
        if value > self.get(key, 0):
            self.stamps.append((time.monotonic(), key))
        super().__setitem__(key, value)


def coinbase_stats(stamps: list[tuple[float, str]], start: float, end: float) -> dict[str, dict[str, float]]:
    """Per currency, between `start` and `end`: calls, per minute, most in any 60 s, shortest gap."""
    out = {}
    window = 60.0
    for currency in ("EUR", "GBP", "USD"):
        times = sorted(t for t, c in stamps if c == currency and start <= t <= end)
        max_in_window = 0
        j = 0
        for i, t in enumerate(times):  # calls in [t, t + 60)
            while j < len(times) and times[j] < t + window:
                j += 1
            max_in_window = max(max_in_window, j - i)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        span = end - start
        out[currency] = {
            "calls": len(times),
            "per_minute": len(times) / span * 60 if span else 0,
            "max_in_60s": max_in_window if span >= window else float("nan"),
            "min_gap": min(gaps) if gaps else float("nan"),
            "span": span,
        }
    return out


@dataclass
class Run:
    args: argparse.Namespace
    write_db: str
    read_db: str
    vhost: str
    coinbase: FakeCoinbase
    calls: TimedCalls
    procs: Processes = field(default_factory=Processes)
    results: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    btc_price: Proc | None = None
    create: Proc | None = None  # the create_buy_order of the latency and lag runs
    relay: Proc | None = None
    sync: Proc | None = None
    fetch: Proc | None = None

    @property
    def amqp_url(self) -> str:
        return amqp_url(self.vhost)

    def write_url(self, driver: bool = False) -> str:
        return pg.db_url(self.write_db, driver)

    def read_url(self, driver: bool = False) -> str:
        return pg.db_url(self.read_db, driver)

    @property
    def create_env(self) -> dict[str, str]:
        assert self.btc_price is not None and self.btc_price.url
        return {
            "RATE_TTL_SECONDS": str(RATE_TTL_SECONDS),
            "WRITE_MODEL_DB_URL": self.write_url(True),
            "BTC_PRICE_URL": self.btc_price.url,
            "BTC_CAP": "21000000",
        }


@contextlib.contextmanager
def suite_environment(args: argparse.Namespace) -> Iterator[Run]:
    """The run's stores (benchkit.stores), Coinbase and btc_price; everything stopped, dropped and
    deleted afterwards, whatever happened."""
    tag = f"{os.getpid()}_{secrets.token_hex(3)}"
    with stores(f"bench_w_{tag}", f"bench_r_{tag}", f"bench_{tag}"):
        coinbase = FakeCoinbase().start()
        calls = TimedCalls()
        coinbase.calls = calls
        run = Run(args, f"bench_w_{tag}", f"bench_r_{tag}", f"bench_{tag}", coinbase, calls)
        try:
            btc_env = {"RATE_TTL_SECONDS": str(RATE_TTL_SECONDS), "COINBASE_API_URL": coinbase.url}
            run.btc_price = run.procs.gunicorn("btc_price", 1, btc_env)
            yield run
        finally:
            run.procs.stop_all()
            coinbase.stop()
