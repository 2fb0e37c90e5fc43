"""The report of bench/pipeline.py: its section of docs/benchmarks.md (bench/templates/pipeline.md,
fed by the run's results) and its plot (docs/img/pipeline.png)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchkit.docs import render, table, write_section
from benchkit.openloop import LATE_START_MS
from benchkit.pipeline_run import BTC_CAP, LOG_LEVEL, NAIVE_CLIENTS, SLO_LAG_P99_MS, SLO_PUT_P99_MS

START = "<!-- pipeline:start (written by bench/pipeline.py) -->"
END = "<!-- pipeline:end -->"
GOAL_RATIO = 1.0  # the highest rate that holds, against the naive ceiling
SUITE = (
    "create_buy_order",
    "fetch_buy_orders",
    "btc_price",
    "outbox_relay",
    "read_model_sync",
    "postgres",
    "postgres (background)",
    "rabbitmq",
)


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.1f}"


def plot(steps: list[dict[str, Any]], ceiling: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [s["rate"] for s in steps]
    figure, axis = plt.subplots(figsize=(9, 5.5), dpi=110)
    axis.plot(rates, [s["put_p99"] for s in steps], marker="o", label="PUT /buy_order p99")
    axis.plot(rates, [s["put_p50"] for s in steps], marker=".", linestyle="--", label="PUT /buy_order p50")
    axis.plot(rates, [s["lag_p99"] for s in steps], marker="s", label="projection lag p99 (applied_at - created_at)")
    axis.plot(rates, [s["lag_p50"] for s in steps], marker=".", linestyle=":", label="projection lag p50")
    axis.axhline(SLO_PUT_P99_MS, color="red", linestyle="--", alpha=0.5, label=f"SLO PUT p99 {SLO_PUT_P99_MS:g} ms")
    axis.axhline(SLO_LAG_P99_MS, color="purple", linestyle=":", alpha=0.5, label=f"SLO lag p99 {SLO_LAG_P99_MS:g} ms")
    axis.axvline(ceiling, color="grey", alpha=0.6, label=f"naive pgbench ceiling ({ceiling:,.0f} tx/s)")
    axis.set_yscale("log")
    axis.set_xlabel("offered rate, orders/s (open loop)")
    axis.set_ylabel("ms (log scale)")
    axis.set_title("Whole pipeline: PUT latency and projection lag against rate")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def steps_table(steps: list[dict[str, Any]]) -> str:
    rows = []
    for s in steps:
        errors = ", ".join(f"{k}: {v}" for k, v in s["statuses"].items() if k != "201") or "0"
        if s["unprojected"]:
            errors += f"; {s['unprojected']} unprojected"
        rows.append([
            f"{s['rate']:.0f}", f"{s['achieved']:.0f}",
            f"{_ms(s['put_p50'])} / {_ms(s['put_p99'])} / {_ms(s['put_max'])}",
            f"{_ms(s['lag_p50'])} / {_ms(s['lag_p99'])} / {_ms(s['lag_max'])}",
            errors, str(s["late_starts"]), "yes" if s["holds"] else "**no**",
        ])  # fmt: skip
    header = ["offered /s", "achieved /s", "PUT p50 / p99 / max ms", "lag p50 / p99 / max ms"]
    return table([*header, "errors", "late starts", "holds"], ["---"] * 7, rows)


def cpu_table(steps: list[dict[str, Any]]) -> str:
    rows = [[f"`{g}`", *(f"{s['cpu_ms_per_order'].get(g, 0):.2f}" for s in steps)] for g in SUITE]
    totals = (sum(s["cpu_ms_per_order"].get(g, 0) for g in SUITE) for s in steps)
    rows.append(["**suite total**", *(f"**{total:.2f}**" for total in totals)])
    rows.append(["load generator (not counted)", *(f"{s['generator_ms_per_order']:.2f}" for s in steps)])
    return table(["group", *(f"{s['rate']:.0f}/s" for s in steps)], ["---"] * (len(steps) + 1), rows)


def command(args: dict[str, str]) -> str:
    if args.get("quick") == "True":
        return "--quick"
    out = [f"--rates {args['rates']}", f"--seconds {float(args['seconds']):g}"]
    out.append(f"--pgbench-seconds {float(args['pgbench_seconds']):g}")
    return " ".join(out + (["--all"] if args.get("all") == "True" else []))


def report(results: dict[str, Any], img: Path | None = None) -> str:
    """The section (without its markers); with `img`, the plot is written there and shown."""
    steps: list[dict[str, Any]] = results.get("steps", [])
    quick = results["args"].get("quick") == "True"
    before, after = results.get("naive_before", float("nan")), results.get("naive_after", float("nan"))
    ceiling = (before + after) / 2
    best = max((s["rate"] for s in steps if s["holds"]), default=None)
    m = results["machine"]
    shown = ""
    if img is not None and steps:
        name = f"pipeline{'_quick' if quick else ''}.png"
        plot(steps, ceiling, img / name)
        shown = f"\n![PUT p99 and projection lag against rate](img/{name})\n"
    figures = {
        "date": m["date"], "nproc": m.get("nproc") or m.get("cores", "?"), "cpu": m["cpu"], "postgres": m["postgres"],
        "load_before": m["load_before"], "load_after": m.get("load_after", "?"),
        "note": f" Machine state: {results['note']}." if results.get("note") else "",
        "command": command(results["args"]), "quick": " (quick: a smoke run, not a measurement)" if quick else "",
        "slo_put": f"{SLO_PUT_P99_MS:g}", "slo_lag": f"{SLO_LAG_P99_MS:g}",
        "verdict": f"{best:.0f} orders/s" if best is not None else "none of the rates run",
        "naive_clients": NAIVE_CLIENTS, "naive_before": f"{before:,.0f}", "naive_after": f"{after:,.0f}",
        "ceiling": f"{ceiling:,.0f}", "ratio": f"{(best or 0.0) / ceiling:.2f}", "goal": f"{GOAL_RATIO:.1f}",
        "steps_table": steps_table(steps), "cpu_table": cpu_table(steps),
        "log_level": LOG_LEVEL, "btc_cap": BTC_CAP, "workers": results["args"].get("workers", "?"),
        "late_ms": f"{LATE_START_MS:g}", "plot": shown,
    }  # fmt: skip
    return render("pipeline.md", figures)


def write(doc: Path, section: str) -> None:
    write_section(doc, START, END, "\n" + section.rstrip() + "\n", before_marker="## Tuning log")
