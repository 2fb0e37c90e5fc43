"""A/B of the create path: PUT /buy_order throughput under wrk, several code trees interleaved.

Each variant is a folder holding a `btc_orders` package (e.g. a `git archive` of an older
`codebase/src`), put first on the create service's PYTHONPATH; `current` is the working tree.
Rounds run the variants in turn (A, B, A, B, ...) against one throwaway write-model database,
one btc_price and the loopback Coinbase of suite.py, so that a noisy machine hits them alike.
Prints one line per run and the medians, with the CPU time the create workers used per request
(from /proc: less sensitive than throughput to other load on a shared machine).

Usage: bench/ab_create.py [--variant NAME=SRC_DIR ...] [--no-current] [--rounds 3] [--seconds 10] [--clients 32 64]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import statistics

from benchkit import log, pg
from benchkit.cpu import cpu_seconds
from benchkit.load import WrkResult, wrk
from benchkit.services import Processes
from benchkit.suite_run import RATE_TTL_SECONDS
from tests.support.fake_coinbase import FakeCoinbase


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", default=[], help="NAME=SRC_DIR (a folder holding btc_orders)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, nargs="+", default=[32])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-current", action="store_true", help="only the --variant trees, not the working tree")
    args = parser.parse_args()
    variants = dict(item.split("=", 1) for item in args.variant) or {}
    if not args.no_current:
        variants.setdefault("current", "")

    tag = f"{os.getpid()}_{secrets.token_hex(3)}"
    write_db = f"bench_ab_w_{tag}"
    procs = Processes()
    coinbase = FakeCoinbase().start()
    conn = pg.admin()
    with conn.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{write_db}"')
    results: dict[tuple[str, int], list[WrkResult]] = {}
    cpu_ms: dict[tuple[str, int], list[float]] = {}
    try:
        from btc_orders.services.migration.__main__ import migrate

        migrate("write_model", pg.db_url(write_db, True))
        common = {"RATE_TTL_SECONDS": str(RATE_TTL_SECONDS)}
        btc_price = procs.gunicorn("btc_price", 1, {**common, "COINBASE_API_URL": coinbase.url})
        create_env = {
            **common,
            "WRITE_MODEL_DB_URL": pg.db_url(write_db, True),
            "BTC_PRICE_URL": btc_price.url or "",
            "BTC_CAP": "21000000",
        }
        for round_ in range(args.rounds):
            order = list(variants.items())
            if round_ % 2:
                order.reverse()  # A B, B A, A B, ...: neither variant always runs first
            for name, src in order:
                env = {**create_env, **({"PYTHONPATH": src} if src else {})}
                create = procs.gunicorn("create_buy_order", args.workers, env)
                wrk("warm-up", create.url or "", 8, 2, "put.lua", str(random.getrandbits(30)))
                workers = create.worker_pids()
                for clients in args.clients:
                    nonce = str(random.getrandbits(30))
                    before = cpu_seconds(workers)
                    run = wrk(f"{name} r{round_}", create.url or "", clients, args.seconds, "put.lua", nonce)
                    used = (cpu_seconds(workers) - before) * 1000 / max(1, run.requests)
                    log(f"  {name} c={clients}: workers' CPU {used:.2f} ms per request")
                    results.setdefault((name, clients), []).append(run)
                    cpu_ms.setdefault((name, clients), []).append(used)
                procs.stop(create)
    finally:
        procs.stop_all()
        coinbase.stop()
        with conn.cursor() as cursor, contextlib.suppress(Exception):
            cursor.execute(f'DROP DATABASE IF EXISTS "{write_db}" WITH (FORCE)')
        conn.close()

    print(f"\nmedians over {args.rounds} rounds, {args.seconds:.0f} s each, {args.workers} workers:")
    for (name, clients), runs in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        rates = [run.ok_rate for run in runs]
        print(
            f"  {name:>10} c={clients:<3} {statistics.median(rates):7.0f} ok req/s "
            f"(runs {', '.join(f'{rate:.0f}' for rate in rates)}), "
            f"p50 {statistics.median(run.p50_ms for run in runs):.1f} ms, "
            f"p99 {statistics.median(run.p99_ms for run in runs):.1f} ms, "
            f"workers' CPU {statistics.median(cpu_ms[name, clients]):.2f} ms/request, "
            f"non-2xx {sum(run.non_2xx for run in runs)}, socket errors {sum(run.socket_errors for run in runs)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
