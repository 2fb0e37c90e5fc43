"""Paging depth: a page's cost must not depend on its depth (SPEC 3.2).

A throwaway read model (migrated by the tree under test) filled with N orders in SQL, the real
fetch_buy_orders of that tree under gunicorn (its docker/gunicorn.conf.py, `--workers` uvicorn
workers), one keep-alive client on 127.0.0.1. Every page is first checked against plain SQL, then
timed, interleaved round-robin so that machine noise falls on every page alike:

- unfiltered keyset pages (`last_reference`) at evenly spaced depths, first to last, against the
  same pages read with `OFFSET` straight from Postgres (the contrast: its cost grows with depth);
- filtered pages (a currency, two, a far-past day, the newest day, a currency in a far-past week):
  first, second and last page of each, and the newer direction (`first_reference`) at the oldest
  order against the top, unfiltered and for GBP.

The goals are p99 ratios <= 1.10: last / first page, last / second page (both with a reference: like
for like), far-past / newest day, deepest / top in the newer direction. Prints the tables; `--plots`
writes paging_depth.png into a folder. The database is dropped at the end, also on Ctrl-C.

    bench/paging.sh                   # 1,000,000 orders, about 5 minutes on 2 cores
    bench/paging.sh --quick           # 100,000 orders, about 2 minutes
    bench/paging.sh --src /tmp/before # another checkout of the project
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from benchkit import log, pg, table
from benchkit.machine import commit, describe, machine
from benchkit.paging_cases import Case, filtered_cases, http_page, interleaved
from benchkit.paging_sql import GOAL_RATIO, PAGE_SIZE, Depth, choose_depths, load_orders, offset_page
from benchkit.pipeline_run import OWN
from benchkit.services import Processes, Tree
from benchkit.stats import ms, pct
from benchkit.stores import stores


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=0, help="orders to load (default 1,000,000; quick 100,000)")
    parser.add_argument("--quick", action="store_true", help="100,000 orders, 300 samples per page")
    parser.add_argument("--requests", type=int, default=0, help="recorded requests per page (1000; quick 300)")
    parser.add_argument("--warmup", type=int, default=50, help="unrecorded warm-up rounds")
    parser.add_argument("--depths", type=int, default=11, help="evenly spaced depths (default 11)")
    parser.add_argument("--offset-budget", type=float, default=5.0, help="seconds of OFFSET samples per depth")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of fetch_buy_orders")
    parser.add_argument("--src", default="", help="another checkout of the project to run")
    parser.add_argument("--python", default="", help="the interpreter of --src (default: its .venv's, else this one)")
    parser.add_argument("--plots", type=Path, metavar="FOLDER", help="write paging_depth.png into this folder")
    args = parser.parse_args()
    args.orders = args.orders or (100_000 if args.quick else 1_000_000)
    args.requests = args.requests or (300 if args.quick else 1000)
    if args.orders < 100 * PAGE_SIZE or args.depths < 3:
        parser.error(f"--orders must be at least {100 * PAGE_SIZE} and --depths at least 3")
    return args


def depth_params(depth: Depth) -> list[tuple[str, str]]:
    return [("last_reference", depth.reference)] if depth.reference else []


def offset_samples(cursor: Any, depths: list[Depth], args: argparse.Namespace) -> dict[str, list[float]]:
    """OFFSET per depth: up to `--requests` samples or `--offset-budget` seconds (at least 20)."""
    results: dict[str, list[float]] = {}
    for depth in depths:
        samples: list[float] = []
        started = time.monotonic()
        while len(samples) < args.requests and (len(samples) < 20 or time.monotonic() - started < args.offset_budget):
            began = time.perf_counter()
            offset_page(cursor, depth)
            samples.append((time.perf_counter() - began) * 1000)
        results[depth.label] = samples
    return results


def ratio_rows(ratios: list[tuple[str, str, str]], samples: dict[str, list[float]]) -> tuple[list[list[str]], bool]:
    rows, met = [], True
    for name, numerator, denominator in ratios:
        p99 = pct(samples[numerator], 99) / pct(samples[denominator], 99)
        p50 = pct(samples[numerator], 50) / pct(samples[denominator], 50)
        met &= p99 <= GOAL_RATIO
        rows.append([name, f"{p99:.2f}", f"{p50:.2f}", "met" if p99 <= GOAL_RATIO else "NOT MET"])
    return rows, met


def plot(folder: Path, depths: list[Depth], keyset: dict[str, list[float]], offset: dict[str, list[float]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [d.skip / 1000 for d in depths]
    figure, axis = plt.subplots(figsize=(9, 5.5), dpi=110)
    for name, series, colour in (("keyset via HTTP", keyset, "tab:blue"), ("OFFSET SQL", offset, "tab:red")):
        axis.plot(x, [pct(series[d.label], 50) for d in depths], "o-", color=colour, label=f"{name} p50")
        axis.plot(x, [pct(series[d.label], 99) for d in depths], "o--", color=colour, alpha=0.6, label=f"{name} p99")
    axis.set_yscale("log")
    axis.set_xlabel("page depth (thousands of newer orders skipped)")
    axis.set_ylabel("ms per page (log scale)")
    axis.set_title(f"Page of {PAGE_SIZE} by depth: keyset through the service vs OFFSET")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    figure.savefig(folder / "paging_depth.png")
    plt.close(figure)
    return folder / "paging_depth.png"


def measure(args: argparse.Namespace, tree: Tree, read_url: str, procs: Processes) -> bool:
    log(f"loading {args.orders:,} orders")
    load_s = load_orders(read_url, args.orders)
    env = tree.dotenv(OWN) | {"READ_MODEL_DB_URL": read_url, "LOG_LEVEL": "WARNING", "FLUENTD_HOST": ""}
    service = procs.gunicorn("fetch_buy_orders", args.workers, env)
    with (
        pg.connect(read_url, "bench_paging") as connection,
        httpx.Client(base_url=service.url or "", timeout=30) as client,
    ):
        cursor = connection.cursor()
        depths = choose_depths(cursor, args.orders, args.depths)
        by_label = {d.label: d for d in depths}
        for depth in depths:
            if http_page(client, depth_params(depth)) != offset_page(cursor, depth):
                raise SystemExit(f"the service's page at depth {depth.skip:,} differs from OFFSET's")
        cases, ratios = filtered_cases(cursor, args.orders)
        for case in cases:
            if tuple(http_page(client, case.params)) != case.expected:
                raise SystemExit(f"{case.label}: the service's page differs from plain SQL's")
        by_case: dict[str, Case] = {c.label: c for c in cases}
        log(f"keyset via HTTP: {len(depths)} depths x ({args.warmup} + {args.requests}), interleaved")
        keyset = interleaved(
            list(by_label), lambda label: http_page(client, depth_params(by_label[label])), args.warmup, args.requests
        )
        log(f"filtered pages and the newer direction: {len(cases)} pages, interleaved")
        filtered = interleaved(
            list(by_case), lambda label: http_page(client, by_case[label].params), args.warmup, args.requests
        )
        log("OFFSET SQL per depth")
        offset = offset_samples(cursor, depths, args)
    depth_ratios = [
        ("unfiltered: last / first page", "last", "first"),
        ("unfiltered: last / second page", "last", "second"),
    ]
    goal_rows, met = ratio_rows(depth_ratios, keyset)
    more_rows, filtered_met = ratio_rows(ratios, filtered)
    print(f"\nTree: {tree.root} at {commit(tree.root)}; fetch_buy_orders under gunicorn, {args.workers} workers.")
    print(f"Read model: {args.orders:,} orders, pages of {PAGE_SIZE}, loaded in {load_s:.0f}s.")
    print(
        f"Samples: {args.requests} a page after {args.warmup} warm-up rounds; OFFSET within {args.offset_budget:g}s.\n"
    )
    depth_rows = [
        [d.label, f"{d.skip:,}", f"{ms(pct(keyset[d.label], 50))} / {ms(pct(keyset[d.label], 99))}",
         f"{ms(pct(offset[d.label], 50))} / {ms(pct(offset[d.label], 99))}"]
        for d in depths
    ]  # fmt: skip
    print(table(["page", "rows skipped", "keyset via HTTP p50 / p99 ms", "OFFSET SQL p50 / p99 ms"], depth_rows))
    print()
    print(table(["goal", "p99 ratio", "p50 ratio", f"p99 ratio <= {GOAL_RATIO:.2f}"], goal_rows + more_rows))
    print()
    case_rows = [[label, f"{ms(pct(s, 50))} / {ms(pct(s, 99))}"] for label, s in filtered.items()]
    print(table(["page", "p50 / p99 ms"], case_rows))
    if args.plots:
        print(f"\nplot: {plot(args.plots, depths, keyset, offset)}")
    return met and filtered_met


def main() -> int:
    args = parse_args()
    tree = Tree.at(args.src, args.python)
    info = machine()
    signal.signal(signal.SIGTERM, lambda signum, _: (_ for _ in ()).throw(SystemExit(128 + signum)))
    tag = f"{os.getpid()}_{secrets.token_hex(3)}"
    procs = Processes(tree)
    with stores(tree, f"bench_gw_{tag}", f"bench_gr_{tag}"):
        try:
            met = measure(args, tree, pg.db_url(f"bench_gr_{tag}"), procs)
        finally:
            procs.stop_all()
    info["load"] += f" before, {' '.join(f'{v:.2f}' for v in os.getloadavg())} after"
    print(f"\nMachine: {describe(info)}.\n{'Every goal met' if met else 'Not every goal met (see NOT MET above)'}.")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
