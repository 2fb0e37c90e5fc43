"""The benchmark suite: the whole system as it runs in production, against ceilings measured in
the same run on the same machine, written to docs/benchmarks.md with plots in docs/img/.

Everything runs on 127.0.0.1: throwaway Postgres databases and a RabbitMQ vhost, the services
under gunicorn with uvicorn workers (docker/gunicorn.conf.py, LOG_LEVEL=WARNING, each process in
its own empty temporary working directory so that the repository's .env is not read), Coinbase
played by codebase/tests/support/fake_coinbase.py in this process. Load: wrk (closed loop, one
thread) for throughput, an open-loop asyncio generator (benchkit/openloop.py) for latency and lag.

Phases (one function each, benchkit/suite_write.py and suite_read.py): ceilings (wrk and trivial
FastAPI) -> pgbench ceilings (a) and (b) -> PUT /buy_order throughput at 1/8/32/64 clients and 2
and 4 workers -> pgbench again -> profile (py-spy) -> PUT latency at half the max rate ->
read_model_sync drain -> outbox_relay drain -> projection lag at half the max rate -> GET
/buy_orders vs the trivial endpoint -> paging depth (bench/paging.py) -> report
(benchkit/suite_report.py, the prose in bench/templates/suite.md).

Usage: bench/run_all.sh [--quick] (see --help)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from benchkit import REPO, log, pg
from benchkit.docs import write_section
from benchkit.machine import machine
from benchkit.suite_plots import plots
from benchkit.suite_read import get_vs_trivial, paging_depth, projection_lag, relay_drain, sync_drain
from benchkit.suite_report import report
from benchkit.suite_run import Run, suite_environment
from benchkit.suite_write import (
    http_ceilings,
    pgbench_after,
    pgbench_before,
    profile_create,
    put_latency,
    put_throughput,
)

SECTION_START = "<!-- suite:start (written by bench/suite.py) -->"
SECTION_END = "<!-- suite:end -->"
PAGING_START = "<!-- paging-depth:start"

PHASES: list[Callable[[Run], None]] = [
    http_ceilings,
    pgbench_before,
    put_throughput,
    pgbench_after,
    profile_create,
    put_latency,
    sync_drain,
    relay_drain,
    projection_lag,
    get_vs_trivial,
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (a few minutes in all)")
    parser.add_argument("--seconds", type=float, help="seconds per throughput point (full 10, quick 4)")
    parser.add_argument("--workers", default="2,4", help="create_buy_order WEB_CONCURRENCY values (default 2,4)")
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--drain-events", type=int, help="events in the drain queue (full 100000, quick 20000)")
    parser.add_argument(
        "--relay-backlog", type=int, help="outbox rows left unsent for the relay drain (full 30000, quick 10000)"
    )
    parser.add_argument("--no-paging", action="store_true", help="skip bench/paging.py")
    parser.add_argument("--no-write", action="store_true", help="print the report, write no files")
    parser.add_argument("--limit", type=float, help="abort after this many seconds (full 2400, quick 720)")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (4 if args.quick else 10)
    args.drain_events = args.drain_events or (20_000 if args.quick else 100_000)
    args.relay_backlog = args.relay_backlog or (10_000 if args.quick else 30_000)
    args.limit = args.limit or (720 if args.quick else 2400)
    args.workers = [int(w) for w in args.workers.split(",")]
    args.clients = [int(c) for c in args.clients.split(",")]
    return args


def main() -> int:
    args = parse_args()

    def interrupted(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    def out_of_time(_signum: int, _frame: Any) -> None:
        raise SystemExit("time limit reached")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(args.limit))
    info = machine("wrk", "pgbench", "rabbitmq")
    info["postgres"] = str(pg.scalar(pg.PG_ADMIN, "SHOW server_version")).split()[0]
    log(f"machine: {info}")
    try:
        with suite_environment(args) as run:
            run.results.update({"clients": args.clients, "load_start": os.getloadavg()})
            for phase in PHASES:
                log(f"phase: {phase.__name__}")
                phase(run)
            signal.alarm(0)  # paging.py has its own bound
            if not args.no_paging:
                paging_depth(run)
            results = run.results
            results["load_end"] = os.getloadavg()
            results["elapsed"] = time.monotonic() - run.started
    finally:
        signal.alarm(0)
    names = plots(results, REPO / "docs" / "img", args.quick) if not args.no_write else {}
    section = report(results, info, args, names)
    print(section)
    if not args.no_write:
        write_section(REPO / "docs" / "benchmarks.md", SECTION_START, SECTION_END, section, before_marker=PAGING_START)
        log("wrote docs/benchmarks.md and docs/img/bench_*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
