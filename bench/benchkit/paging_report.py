"""bench/paging.py's report (bench/templates/paging.md, every figure and verdict from the run) and plot."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path
from typing import Any

from benchkit.docs import render, table
from benchkit.paging_cases import Case
from benchkit.paging_sql import GOAL_RATIO, HISTORY_START, METHODS, ORDER_SPACING_S, PAGE_SIZE, Depth
from benchkit.stats import Samples, fmt


def cells(series: dict[str, dict[str, Samples]], depth: Depth) -> list[str]:
    return [f"{fmt(series[name][depth.label].p50)} / {fmt(series[name][depth.label].p99)}" for name in METHODS]


def filtered_tables(
    cases: list[Case], ratios: list[tuple[str, str, str]], samples: dict[str, Samples]
) -> tuple[str, str, bool]:
    """The goal table (ratios of p99), the per-page table, and whether every goal is met."""
    rows, met_all = [], True
    for name, numerator, denominator in ratios:
        ratio = samples[numerator].p99 / samples[denominator].p99
        met_all &= ratio <= GOAL_RATIO
        p50_ratio = samples[numerator].p50 / samples[denominator].p50
        rows.append([name, f"{ratio:.2f}", f"{p50_ratio:.2f}", "met" if ratio <= GOAL_RATIO else "**not met**"])
    goals = table(
        ["goal", "ratio of p99", "ratio of p50", f"met (p99 ≤ {GOAL_RATIO:.2f})"], ["---", "---:", "---:", "---"], rows
    )
    pages = table(
        ["page", "p50 / p99 (ms)"],
        ["---", "---:"],
        [[c.label, f"{fmt(samples[c.label].p50)} / {fmt(samples[c.label].p99)}"] for c in cases],
    )
    return goals, pages, met_all


def report(
    args: argparse.Namespace,
    m: dict[str, Any],
    filtered: tuple[list[Case], list[tuple[str, str, str]], dict[str, Samples]],
) -> tuple[str, bool, bool, float]:
    """The section; the depth goal met, every filtered goal met, the last/first ratio. `m`: what main measured."""
    series, key, depths = m["series"], m["key"], m["depths"]
    http = series["keyset via HTTP"]
    first, last = key[0].label, key[-1].label

    def ratio(name: str, numerator: str = last, denominator: str = first, q: str = "p99") -> float:
        return float(getattr(series[name][numerator], q) / getattr(series[name][denominator], q))

    depth_ratio = ratio("keyset via HTTP")
    met = depth_ratio <= GOAL_RATIO
    goals, pages, filtered_met = filtered_tables(*filtered)
    offset_ns = sorted({series["OFFSET SQL"][d.label].n for d in depths})
    key_rows = [
        [
            d.label,
            f"{d.skip:,}",
            *cells(series, d),
            f"{m['buffers']['keyset'][d.label]:,} / {m['buffers']['offset'][d.label]:,}",
        ]
        for d in key
    ]
    key_header = [
        "page",
        "depth (rows skipped)",
        *(f"{name} p50 / p99 (ms)" for name in METHODS),
        "buffers keyset / OFFSET",
    ]
    depth_header = ["depth", *METHODS]
    years = args.orders * ORDER_SPACING_S / (365 * 86400)
    figures = {
        **m["info"],
        "command": "bench/run.sh --quick" if args.quick else "bench/run.sh",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "orders": f"{args.orders:,}",
        "page_size": PAGE_SIZE,
        "limit": PAGE_SIZE + 1,
        "goal_percent": f"{round((GOAL_RATIO - 1) * 100)}%",
        "met": "Met" if met else "Not met",
        "ratio": f"{depth_ratio:.2f}",
        "sql_ratio": f"{ratio('keyset SQL'):.2f}",
        "one_ratio": f"{ratio('keyset SQL, one statement'):.2f}",
        "offset_ratio": f"{ratio('OFFSET SQL'):.0f}",
        "second_ratio": f"{ratio('keyset via HTTP', last, 'second'):.2f}",
        "second_p50_ratio": f"{ratio('keyset via HTTP', last, 'second', 'p50'):.2f}",
        "load_start": f"{m['load_average'][0][0]:.2f}",
        "load_end": f"{m['load_average'][1][0]:.2f}",
        "service": m["service"],
        "load_s": f"{m['load_s']:.0f}",
        "key_table": table(key_header, ["---", *["---:"] * (len(key_header) - 1)], key_rows),
        "http_n": http[first].n,
        "warmup": args.warmup,
        "requests": args.requests,
        "offset_n": f"{offset_ns[0]}" if len(offset_ns) == 1 else f"{offset_ns[0]} to {offset_ns[-1]}",
        "offset_budget": f"{args.offset_budget:g}",
        "offset_min": args.offset_min,
        "healthz_p50": fmt(m["healthz"].p50),
        "healthz_p99": fmt(m["healthz"].p99),
        "depth_table": table(
            depth_header, ["---:"] * len(depth_header), [[f"{d.skip:,}", *cells(series, d)] for d in depths]
        ),
        "plot": os.path.relpath(args.plot, args.doc.parent),
        "elapsed": f"{m['elapsed_s']:.0f}",
        "spacing": ORDER_SPACING_S,
        "history_start": f"{HISTORY_START:%Y-%m-%d}",
        "history_span": f"{years:.1f} years" if years >= 1 else f"{years * 365:.0f} days",
        "goal_table": goals,
        "case_table": pages,
    }
    return render("paging.md", figures), met, filtered_met, depth_ratio


def write_plot(path: Path, orders: int, depths: list[Depth], series: dict[str, dict[str, Samples]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [depth.skip / 1000 for depth in depths]
    styles = {
        "keyset via HTTP": ("tab:blue", "o"),
        "keyset SQL": ("tab:green", "s"),
        "keyset SQL, one statement": ("tab:purple", "D"),
        "OFFSET SQL": ("tab:red", "^"),
    }
    figure, axis = plt.subplots(figsize=(9, 5.5), dpi=110)
    for name, results in series.items():
        colour, marker = styles[name]
        p50 = [results[depth.label].p50 for depth in depths]
        p99 = [results[depth.label].p99 for depth in depths]
        axis.plot(x, p50, color=colour, marker=marker, label=f"{name} p50")
        axis.plot(x, p99, color=colour, marker=marker, linestyle="--", alpha=0.6, label=f"{name} p99")
    axis.set_yscale("log")
    axis.set_xlabel("page depth (thousands of newer orders skipped)")
    axis.set_ylabel("latency per page (ms, log scale)")
    axis.set_title(f"Page of {PAGE_SIZE} by depth, {orders:,} orders: keyset vs OFFSET")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8, ncol=3, loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
