"""A/B of the create path's CPU per order at a fixed open-loop rate (issue 16's measure).

Each variant is a folder holding a `btc_orders` package (e.g. `git archive` of an older
`codebase/src`), put first on create_buy_order's PYTHONPATH; `current` is the working tree.
Rounds run the variants in turn (A B, B A, ...) against one throwaway write-model database,
one btc_price and the fake Coinbase; create_buy_order runs under gunicorn
(docker/gunicorn.conf.py) with `.env`'s settings and LOG_LEVEL=INFO. Prints the CPU time its
processes used per order (from /proc) and the PUT latency, per run and as medians.

    .venv/bin/python bench/ab_open.py --variant before=/tmp/src_before --rate 200 --seconds 15 --rounds 3
    .venv/bin/python bench/ab_open.py --variant warning=@WARNING    # the working tree at INFO and at WARNING
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "codebase" / "tests" / "support"))
from fake_coinbase import FakeCoinbase

from pipeline import GUNICORN_CONF, PG_ADMIN, Service, db_url, dotenv, log, pct, sql, start
from pipeline_load import cpu_by_group, cpu_used, open_loop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=SRC_DIR[@LOG_LEVEL] (a folder holding btc_orders; empty: the working tree)",
    )
    parser.add_argument("--no-current", action="store_true")
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    variants = dict(item.split("=", 1) for item in args.variant)  # NAME=SRC_DIR[@LOG_LEVEL]
    if not args.no_current:
        variants["current"] = ""

    write_db = f"bench_abo_{secrets.token_hex(4)}"
    sql(PG_ADMIN, f'CREATE DATABASE "{write_db}"')
    coinbase = FakeCoinbase().start()
    services: list[Service] = []
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    p99: dict[str, list[float]] = {name: [] for name in variants}
    try:
        from btc_orders.services.migration.__main__ import migrate

        migrate("write_model", db_url(write_db, True))
        gunicorn = [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONF)]
        env = {**dotenv(), "LOG_LEVEL": args.log_level, "FLUENTD_HOST": "", "COINBASE_API_URL": coinbase.url}
        btc_price = start("btc_price", gunicorn, {**env, "BTC_ORDERS_SERVICE": "btc_price"}, "BTC_PRICE_PORT")
        services.append(btc_price)
        env |= {"BTC_PRICE_URL": btc_price.url, "WRITE_MODEL_DB_URL": db_url(write_db, True), "BTC_CAP": "21000000"}
        env |= {"WEB_CONCURRENCY": str(args.workers), "BTC_ORDERS_SERVICE": "create_buy_order"}
        for round_ in range(args.rounds):
            order = list(variants.items())
            if round_ % 2:
                order.reverse()
            for name, variant in order:
                src, _, level = variant.partition("@")
                own = {**({"PYTHONPATH": src} if src else {}), **({"LOG_LEVEL": level} if level else {})}
                create = start(name, gunicorn, {**env, **own}, "CREATE_BUY_ORDER_PORT")
                asyncio.run(open_loop(create.url, args.rate, 2))  # warm-up
                sessions = {create.process.pid: name}
                before = cpu_by_group(sessions, ())
                load = asyncio.run(open_loop(create.url, args.rate, args.seconds))
                used = cpu_used(before, cpu_by_group(sessions, ()))[name]
                ok = load.statuses.get("201", 0)
                cpu[name].append(1000 * used / max(ok, 1))
                p99[name].append(pct(load.latency_ms, 99))
                log(
                    f"{name} r{round_}: {ok} orders, CPU {cpu[name][-1]:.3f} ms/order, PUT p50 "
                    f"{pct(load.latency_ms, 50):.1f} p99 {p99[name][-1]:.1f} ms, other statuses "
                    f"{ {k: v for k, v in load.statuses.items() if k != '201'} }"
                )
                create.stop()
    finally:
        for service in services:
            with contextlib.suppress(Exception):
                service.stop()
        coinbase.stop()
        with contextlib.suppress(Exception):
            sql(PG_ADMIN, f'DROP DATABASE IF EXISTS "{write_db}" WITH (FORCE)')
    print(f"\nmedians over {args.rounds} rounds, {args.rate:.0f}/s for {args.seconds:.0f} s, {args.workers} worker(s):")
    for name in variants:
        print(
            f"  {name:>12}: {statistics.median(cpu[name]):.3f} ms CPU/order "
            f"(runs {', '.join(f'{v:.3f}' for v in cpu[name])}), PUT p99 {statistics.median(p99[name]):.1f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
