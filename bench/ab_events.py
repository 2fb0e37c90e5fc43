"""A/B of the event path's CPU per order: outbox_relay, read_model_sync and their Postgres backends.

Each variant is a folder holding a `btc_orders` package (e.g. `git archive` of an older
`codebase/src`), put first on the workers' PYTHONPATH; `current` is the working tree. Per round
and variant (A B, B A, ...): fresh throwaway databases and vhost, the relay and the worker started
as production starts them (`python -m`, `.env`'s settings, LOG_LEVEL=INFO); orders are written
straight into the write model by this process at each fixed rate (its CPU and its own backend's
are not counted), then drained; CPU per order of each group from /proc over the load and the
drain, lag from the databases' clocks (`applied_at - created_at`); then the idle CPU per second.
The first rate is run twice, the first time as a warm-up. Prints every run and the medians.

    .venv/bin/python bench/ab_events.py --variant before=/tmp/src_before --rates 50,200,400 --rounds 3
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
import uuid
from decimal import Decimal

from btc_orders.adapters import db
from btc_orders.adapters.write_model import WriteModel
from btc_orders.domain.orders import Currency, OrderRequest
from sqlalchemy import text

from benchkit import cpu, log, pg
from benchkit.pipeline_run import WORKERS, count, epochs, production_env
from benchkit.services import Processes, free_port
from benchkit.stats import pct
from benchkit.stores import amqp_url, stores

GROUPS = ("outbox_relay", "read_model_sync", "postgres")
LABELS = ("relay", "sync", "postgres")
DRAIN_TIMEOUT_S = 15.0


def write_orders(write_model: WriteModel, rate: float, seconds: float) -> int:
    """Orders at a fixed schedule, one at a time; returns how many."""
    total, start = int(rate * seconds), time.monotonic()
    for index in range(total):
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        write_model.place(OrderRequest(Currency.EUR, Decimal("1.00"), uuid.uuid4()), Decimal("90000.00"), f"r{index}")
    return total


def one_rate(
    write_model: WriteModel, rate: float, seconds: float, groups: dict[int, str], names: tuple[str, str], writer: int
) -> dict[str, float]:
    """CPU ms per order by group (the writer's backend, pid `writer`, left out), and the lag p50 / p99."""
    write, read = pg.db_url(names[0]), pg.db_url(names[1])
    first = int(pg.scalar(write, "SELECT coalesce(max(sequence), 0) FROM buy_order"))
    before, writer_before = cpu.snapshot(groups, names), cpu.cpu_seconds([writer])
    orders = write_orders(write_model, rate, seconds)
    stored, deadline = count(write, "buy_order", first), time.monotonic() + DRAIN_TIMEOUT_S
    while count(read, "buy_order_view", first) < stored and time.monotonic() < deadline:
        time.sleep(0.05)
    used = cpu.used(before, cpu.snapshot(groups, names))
    used["postgres"] -= cpu.cpu_seconds([writer]) - writer_before
    applied = dict(epochs(read, "applied_at", "buy_order_view", first))
    created = epochs(write, "created_at", "buy_order", first)
    lag = [(float(applied[s]) - float(c)) * 1000 for s, c in created if s in applied]
    result = {group: 1000 * used[group] / orders for group in GROUPS}
    return result | {"lag_p50": pct(lag, 50), "lag_p99": pct(lag, 99), "unprojected": float(orders - len(lag))}


def one_run(src: str, rates: list[float], seconds: float, idle_seconds: float) -> dict[str, dict[str, float]]:
    """One variant: its own stores and workers, every rate, then the idle CPU (ms per second)."""
    tag = secrets.token_hex(4)
    names = (f"bench_abe_w_{tag}", f"bench_abe_r_{tag}")
    procs = Processes()
    results: dict[str, dict[str, float]] = {}
    with stores(*names, f"bench_abe_{tag}"):
        env = production_env("http://127.0.0.1:9") | {
            "WRITE_MODEL_DB_URL": pg.db_url(names[0], True),
            "READ_MODEL_DB_URL": pg.db_url(names[1], True),
            "AMQP_URL": amqp_url(f"bench_abe_{tag}"),
            **({"PYTHONPATH": src} if src else {}),
        }
        engine = db.create_engine(pg.db_url(names[0], True), 1)  # one connection: one backend to leave out
        try:
            write_model = WriteModel(engine)
            write_model.ensure_cap(21_000_000 * 10**8)
            with engine.connect() as connection:
                writer = int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())
            for name, port_var in WORKERS:
                procs.module(name, {**env, port_var: str(free_port())})
            groups = {proc.pid: proc.name for proc in procs.running}
            one_rate(write_model, rates[0], min(seconds, 3), groups, names, writer)  # warm-up
            for rate in rates:
                results[f"{rate:g}/s"] = one_rate(write_model, rate, seconds, groups, names, writer)
            before, start = cpu.snapshot(groups, names), time.monotonic()
            time.sleep(idle_seconds)
            used = cpu.used(before, cpu.snapshot(groups, names))
            results["idle"] = {group: 1000 * used[group] / (time.monotonic() - start) for group in GROUPS}
        finally:
            procs.stop_all()
            engine.dispose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", action="append", default=[], help="NAME=SRC_DIR (a folder holding btc_orders)")
    parser.add_argument("--no-current", action="store_true")
    parser.add_argument("--rates", default="50,200,400")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--idle-seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    variants = dict(item.split("=", 1) for item in args.variant)
    if not args.no_current:
        variants["current"] = ""
    rates = [float(rate) for rate in args.rates.split(",")]
    runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in variants}
    for round_ in range(args.rounds):
        order = list(variants.items())
        if round_ % 2:
            order.reverse()
        for name, src in order:
            runs[name].append(one_run(src, rates, args.seconds, args.idle_seconds))
            log(f"{name} r{round_}: {_line(runs[name][-1])}")
    print(f"\nmedians over {args.rounds} rounds ({args.seconds:g} s per rate; CPU ms per order, idle ms per second):")
    for name, results in runs.items():
        medians = {
            point: {key: statistics.median(run[point][key] for run in results) for key in results[0][point]}
            for point in results[0]
        }
        print(f"  {name:>10}: {_line(medians)}")
    return 0


def _line(results: dict[str, dict[str, float]]) -> str:
    parts = []
    for point, values in results.items():
        cpu_part = " ".join(f"{label} {values[group]:.2f}" for group, label in zip(GROUPS, LABELS, strict=True))
        lag = f", lag {values['lag_p50']:.0f}/{values['lag_p99']:.0f} ms" if "lag_p50" in values else ""
        parts.append(f"[{point}: {cpu_part}{lag}]")
    return " ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
