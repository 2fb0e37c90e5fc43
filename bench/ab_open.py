"""A/B of the create path's CPU per order at a fixed open-loop rate (issue 16's measure).

Each variant is a folder holding a `btc_orders` package (e.g. `git archive` of an older
`codebase/src`), put first on create_buy_order's PYTHONPATH; `current` is the working tree.
Rounds run the variants in turn (A B, B A, ...) against one throwaway write-model database,
one btc_price and the fake Coinbase; create_buy_order runs under gunicorn
(docker/gunicorn.conf.py) with `.env`'s settings and LOG_LEVEL=INFO. Prints the CPU time its
processes used per order (from /proc), and their Postgres backends', and the PUT latency, per run and as medians.

    .venv/bin/python bench/ab_open.py --variant before=/tmp/src_before --rate 200 --seconds 15 --rounds 3
    .venv/bin/python bench/ab_open.py --variant warning=@WARNING    # the working tree at INFO and at WARNING
    .venv/bin/python bench/ab_open.py --trivial --rate 400          # against a trivial FastAPI PUT
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import statistics

from benchkit import cpu, log, pg
from benchkit.openloop import run_open_loop
from benchkit.pipeline_run import BTC_CAP, production_env, statuses
from benchkit.services import Processes
from benchkit.stats import pct
from tests.support.fake_coinbase import FakeCoinbase

TRIVIAL = "trivial"  # the variant that is bench/trivial_app.py, not a btc_orders tree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=SRC_DIR[@LOG_LEVEL] (a folder holding btc_orders; empty: the working tree)",
    )
    parser.add_argument("--no-current", action="store_true")
    parser.add_argument(
        "--trivial",
        action="store_true",
        help="also bench/trivial_app.py's PUT /buy_order (201, body unread) under the same gunicorn settings, "
        "as the variant `trivial`: issue 16's create ÷ trivial PUT ratio at the same rate",
    )
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    variants = dict(item.split("=", 1) for item in args.variant)  # NAME=SRC_DIR[@LOG_LEVEL]
    if not args.no_current:
        variants["current"] = ""
    if args.trivial:
        variants["trivial"] = TRIVIAL

    write_db = f"bench_abo_{secrets.token_hex(4)}"
    pg.create_database(write_db)
    coinbase = FakeCoinbase().start()
    procs = Processes()
    cpu_ms: dict[str, list[float]] = {name: [] for name in variants}
    pg_ms: dict[str, list[float]] = {name: [] for name in variants}
    p99: dict[str, list[float]] = {name: [] for name in variants}
    try:
        from btc_orders.services.migration.__main__ import migrate

        migrate("write_model", pg.db_url(write_db, True))
        env = production_env(coinbase.url, args.log_level)
        btc_price = procs.gunicorn("btc_price", args.workers, env, ready_path="/readyz")
        assert btc_price.url
        env |= {"BTC_PRICE_URL": btc_price.url, "WRITE_MODEL_DB_URL": pg.db_url(write_db, True), "BTC_CAP": BTC_CAP}
        for round_ in range(args.rounds):
            order = list(variants.items())
            if round_ % 2:
                order.reverse()
            for name, variant in order:
                src, _, level = variant.partition("@")
                own = {**({"PYTHONPATH": src} if src else {}), **({"LOG_LEVEL": level} if level else {})}
                if variant == TRIVIAL:
                    create = procs.gunicorn("create_buy_order", args.workers, env, app="trivial_app:app")
                else:
                    create = procs.gunicorn("create_buy_order", args.workers, {**env, **own}, ready_path="/readyz")
                assert create.url
                run_open_loop(create.url, args.rate, 2)  # warm-up
                groups = {create.pid: name}
                before = cpu.snapshot(groups, (write_db,))
                load = run_open_loop(create.url, args.rate, args.seconds)
                used = cpu.used(before, cpu.snapshot(groups, (write_db,)))
                ok = load.statuses.get(201, 0)
                cpu_ms[name].append(1000 * used[name] / max(ok, 1))
                pg_ms[name].append(1000 * used["postgres"] / max(ok, 1))
                p99[name].append(pct(load.put_latency_ms, 99))
                log(
                    f"{name} r{round_}: {ok} orders, CPU {cpu_ms[name][-1]:.3f} ms/order "
                    f"(Postgres {pg_ms[name][-1]:.3f}), PUT p50 "
                    f"{pct(load.put_latency_ms, 50):.1f} p99 {p99[name][-1]:.1f} ms, other statuses "
                    f"{ {k: v for k, v in statuses(load).items() if k != '201'} }"
                )
                procs.stop(create)
    finally:
        procs.stop_all()
        coinbase.stop()
        with contextlib.suppress(Exception):
            pg.drop_database(write_db)
    if args.trivial:
        trivial = statistics.median(cpu_ms["trivial"])
        for name in variants:
            if name != "trivial":
                print(f"  {name} ÷ trivial PUT, CPU per request: {statistics.median(cpu_ms[name]) / trivial:.2f}")
    print(f"\nmedians over {args.rounds} rounds, {args.rate:.0f}/s for {args.seconds:.0f} s, {args.workers} worker(s):")
    for name in variants:
        print(
            f"  {name:>12}: {statistics.median(cpu_ms[name]):.3f} ms CPU/order "
            f"(runs {', '.join(f'{v:.3f}' for v in cpu_ms[name])}), its Postgres backends "
            f"{statistics.median(pg_ms[name]):.3f} ms/order, PUT p99 {statistics.median(p99[name]):.1f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
