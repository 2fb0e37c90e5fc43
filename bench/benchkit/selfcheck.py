"""Render every report (suite.md, paging.md, pipeline.md) from synthetic figures, in seconds, so
that a template and the figures fed to it cannot drift apart unnoticed until the end of a
20-minute run (./test.sh runs this with the linters: `python -m benchkit.selfcheck` from
bench/). Fails on a placeholder without a figure (string.Template.substitute raises) and on a
figure rendered as NaN."""

from __future__ import annotations

import argparse
import collections
import re
import sys
from typing import Any

from benchkit import REPO, paging_report, pipeline_report, suite_report
from benchkit.load import PgbenchResult, WrkResult
from benchkit.openloop import OpenLoop
from benchkit.paging_cases import Case
from benchkit.paging_sql import Depth
from benchkit.stats import Samples

INFO = {"nproc": "2", "cpu": "cpu", "memory": "1.0 GiB", "python": "3", "kernel": "k", "date": "today"}


def wrk(rate: float, clients: int = 32) -> WrkResult:
    return WrkResult("synthetic", clients, int(rate * 10), 10.0, 0, 0, 1.0, 2.0, 3.0, 0.1)


def open_loop(rate: float) -> OpenLoop:
    run = OpenLoop(rate, 8.0, put_latency_ms=[1.0, 2.0, 30.0], statuses=collections.Counter({201: 3}))
    run.lag = [(0.5, 20.0), (1.5, 40.0)]
    return run


def suite_results(clients: list[int], workers: list[int]) -> dict[str, Any]:
    pgb = {key: {c: PgbenchResult(key, c, 1000.0, 1.0, 0) for c in clients} for key in ("a", "b", "c")}
    cb = {c: {"calls": 10, "per_minute": 20.0, "max_in_60s": 25, "min_gap": 2.0, "span": 60.0} for c in ("EUR", "USD")}
    return {
        "clients": clients,
        "load_start": (1.0, 1.0, 1.0),
        "load_end": (2.0, 2.0, 2.0),
        "elapsed": 100.0,
        "wrk_ceiling_put": wrk(5000),
        "put": {w: {c: wrk(600, c) for c in clients} for w in workers},
        "pool_variant": {10: {32: wrk(500)}, 40: {32: wrk(700)}},
        "orders_stored": 1000,
        "put_2xx": 990,
        "pgbench_before": pgb,
        "pgbench_after": pgb,
        "pgbench_mean": {k: {c: 1000.0 for c in clients} for k in "ab"},
        "max_rate": (600.0, workers[0], 32),
        "half_rate": 300.0,
        "coinbase": cb,
        "coinbase_all": cb,
        "profile": {"error": "synthetic"},
        "read_profile": {
            "own": [("f (x.py)", 50.0)],
            "inclusive": [("place (y.py)", 80.0)],
            "samples": 100,
            "rate": 100.0,
            "clients": 32,
        },
        "latency": open_loop(300),
        "lag_run": open_loop(300),
        "lag_samples": [(0.5, 20.0)],
        "db_lag": [(0.5, 25.0)],
        "db_lag_missing": 0,
        "latency_series": {"PUT": [1.0, 2.0], "lag": [20.0]},
        "drain": {"wall": 10.0, "first_seen": 1.0, "rate_wall": 2000.0, "rate_applying": 2200.0, "publish_s": 3.0},
        "drain_events": 20000,
        "drain_series": [(0.0, 0), (10.0, 20000)],
        "relay": {"backlog": 100, "sent": 100, "wall": 2.0, "first": 1.0, "rate_wall": 50.0, "rate_sending": 100.0},
        "get": {**{(k, c): wrk(1000, c) for k in ("trivial", "healthz", 10, 100) for c in (8, 32)}},
        "read_rows": 1000,
        "paging": "ran",
    }


def paging_inputs() -> tuple[argparse.Namespace, dict[str, Any], Any]:
    args = argparse.Namespace(
        orders=100_000,
        quick=True,
        warmup=5,
        requests=10,
        offset_budget=1.0,
        offset_min=5,
        plot=REPO / "docs" / "img" / "paging_depth.png",
        doc=REPO / "docs" / "benchmarks.md",
    )
    depths = [Depth(label, skip, None) for label, skip in (("first", 0), ("second", 10), ("middle", 5), ("last", 99))]
    samples = {d.label: Samples([1.0, 2.0, 3.0]) for d in depths}
    series = {name: samples for name in ("keyset via HTTP", "keyset SQL", "keyset SQL, one statement", "OFFSET SQL")}
    measured = {
        "info": {**INFO, "postgres": "15"},
        "service": "gunicorn",
        "load_s": 1.0,
        "depths": depths,
        "key": depths,
        "series": series,
        "healthz": Samples([1.0]),
        "buffers": {k: {d.label: 4 for d in depths} for k in ("keyset", "offset")},
        "load_average": ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),
        "elapsed_s": 10.0,
    }
    cases = [Case("a", (), None, ()), Case("b", (), None, ())]
    filtered = (cases, [("b ÷ a", "b", "a")], {"a": Samples([1.0]), "b": Samples([1.0])})
    return args, measured, filtered


def pipeline_results() -> dict[str, Any]:
    step = {
        "rate": 100.0, "achieved": 99.0, "statuses": {"201": 990, "TimeoutError": 1}, "unprojected": 1,
        "put_p50": 5.0, "put_p99": 40.0, "put_max": 60.0, "lag_p50": 20.0, "lag_p99": 80.0, "lag_max": 90.0,
        "late_starts": 2, "holds": True, "generator_ms_per_order": 0.5,
        "cpu_ms_per_order": dict.fromkeys(pipeline_report.SUITE, 1.0),
    }  # fmt: skip
    args = {"rates": "100,200", "seconds": "20.0", "pgbench_seconds": "10.0", "all": "False", "quick": "False"}
    return {
        "machine": {**INFO, "postgres": "15", "load_before": "1.00", "load_after": "2.00"},
        "note": "synthetic",
        "args": {**args, "workers": "2"},
        "naive_before": 250.0,
        "naive_after": 230.0,
        "steps": [step, {**step, "rate": 200.0, "holds": False}],
    }


def check(name: str, text: str) -> list[str]:
    # A placeholder without a figure has raised already (substitute); what is left to check is the figures.
    return [f"{name}: NaN in: {line[:100]}" for line in text.splitlines() if re.search(r"\bnan\b", line)]


def main() -> int:
    args = argparse.Namespace(clients=[1, 8, 32, 64], workers=[2, 4], seconds=10.0, quick=False)
    suite_text = suite_report.report(
        suite_results(args.clients, args.workers),
        {**INFO, "postgres": "15", "pgbench": "p", "rabbitmq": "r", "wrk": "w"},
        args,
        {},
    )
    paging_text, *_ = paging_report.report(*paging_inputs())
    pipeline_text = pipeline_report.report(pipeline_results())
    problems = check("suite.md", suite_text) + check("paging.md", paging_text) + check("pipeline.md", pipeline_text)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"benchkit.selfcheck: bench/templates/ {'do not render' if problems else 'render'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
