"""What bench/pipeline.py prints (the verdict, a table of the steps, CPU per order by process group)
and its plot, written only into a folder given on the command line (`--plots`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchkit import table
from benchkit.machine import describe
from benchkit.openloop import LATE_START_MS
from benchkit.pipeline_run import NAIVE_CLIENTS, SLO_LAG_P99_MS, SLO_PUT_P99_MS

SUITE = (
    "create_buy_order", "fetch_buy_orders", "btc_price", "outbox_relay", "read_model_sync",
    "postgres", "postgres (background)", "rabbitmq",
)  # fmt: skip


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.1f}"


def report(results: dict[str, Any]) -> str:
    steps: list[dict[str, Any]] = results.get("steps", [])
    before, after = results.get("naive_before", math.nan), results.get("naive_after", math.nan)
    ceiling = (before + after) / 2
    best = max((s["rate"] for s in steps if s["holds"]), default=None)
    rows = []
    for s in steps:
        errors = ", ".join(f"{k}: {v}" for k, v in s["statuses"].items() if k != "201") or "0"
        rows.append([
            f"{s['rate']:.0f}", f"{s['achieved']:.0f}",
            f"{_ms(s['put_p50'])} / {_ms(s['put_p99'])} / {_ms(s['put_max'])}",
            f"{_ms(s['lag_p50'])} / {_ms(s['lag_p99'])} / {_ms(s['lag_max'])}",
            errors + (f"; {s['unprojected']} unprojected" if s["unprojected"] else ""),
            str(s["late_starts"]), "yes" if s["holds"] else "NO",
        ])  # fmt: skip
    header = ["offered /s", "achieved /s", "PUT p50 / p99 / max ms", "lag p50 / p99 / max ms", "errors"]
    cpu = [[g, *(f"{s['cpu_ms_per_order'].get(g, 0):.2f}" for s in steps)] for g in SUITE]
    cpu.append(["suite total", *(f"{sum(s['cpu_ms_per_order'].get(g, 0) for g in SUITE):.2f}" for s in steps)])
    cpu.append(["load generator (not counted)", *(f"{s['generator_ms_per_order']:.2f}" for s in steps)])
    verdict = f"{best:.0f} orders/s" if best is not None else "none of the rates run"
    return "\n".join([
        f"Tree: {results['tree']} (interpreter {results['python']}), "
        f"{results.get('workers', '?')} workers per HTTP service.",
        f"Machine: {describe(results['machine'])} before, {results['machine'].get('load_after', '?')} after."
        + (f" Note: {results['note']}." if results.get("note") else ""),
        "",
        f"Highest rate that holds (PUT p99 <= {SLO_PUT_P99_MS:g} ms, lag p99 <= {SLO_LAG_P99_MS:g} ms, no errors, "
        f"every order projected): {verdict}. Naive pgbench ({NAIVE_CLIENTS} clients) {before:,.0f} tx/s before, "
        f"{after:,.0f} after (mean {ceiling:,.0f}): {(best or 0.0) / ceiling:.2f}x the naive ceiling.",
        "",
        table([*header, "late starts", "holds"], rows),
        "",
        f"CPU per order (ms) by process group, from /proc over each step and its drain; late starts: PUTs the "
        f"generator started more than {LATE_START_MS:g} ms late.",
        "",
        table(["group", *(f"{s['rate']:.0f}/s" for s in steps)], cpu),
    ])  # fmt: skip


def plot(results: dict[str, Any], folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = results["steps"]
    rates = [s["rate"] for s in steps]
    figure, axis = plt.subplots(figsize=(9, 5.5), dpi=110)
    for key, style, colour, label in (
        ("put_p99", "o-", "tab:blue", "PUT /buy_order p99"), ("put_p50", ".--", "tab:blue", "PUT /buy_order p50"),
        ("lag_p99", "s-", "tab:green", "projection lag p99 (applied_at - created_at)"),
        ("lag_p50", ".:", "tab:green", "projection lag p50"),
    ):  # fmt: skip
        axis.plot(rates, [s[key] for s in steps], style, color=colour, label=label)
    axis.axhline(SLO_PUT_P99_MS, color="red", linestyle="--", alpha=0.5, label=f"SLO PUT p99 {SLO_PUT_P99_MS:g} ms")
    axis.axhline(SLO_LAG_P99_MS, color="purple", linestyle=":", alpha=0.5, label=f"SLO lag p99 {SLO_LAG_P99_MS:g} ms")
    ceiling = (results["naive_before"] + results["naive_after"]) / 2
    axis.axvline(ceiling, color="grey", alpha=0.6, label=f"naive pgbench ceiling ({ceiling:,.0f} tx/s)")
    axis.set_yscale("log")
    axis.set_xlabel("offered rate, orders/s (open loop)")
    axis.set_ylabel("ms (log scale)")
    axis.set_title(f"Whole pipeline, {results['tree']}")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.png"
    figure.savefig(path)
    plt.close(figure)
    return path
