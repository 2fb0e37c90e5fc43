"""The report of bench/pipeline.py: a Markdown section for docs/benchmarks.md and its plot.

.venv/bin/python bench/pipeline_report.py RESULTS.json [--write]   # render a saved run again
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

START = "<!-- pipeline:start (written by bench/pipeline.py) -->"
END = "<!-- pipeline:end -->"
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
REPO = Path(__file__).resolve().parent.parent


def _ms(value: float) -> str:
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
    axis.axhline(50, color="red", linestyle="--", alpha=0.5, label="SLO PUT p99 50 ms")
    axis.axhline(100, color="purple", linestyle=":", alpha=0.5, label="SLO lag p99 100 ms")
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


def render(results: dict[str, Any], quick: bool = False, img: Path | None = None) -> str:
    steps: list[dict[str, Any]] = results.get("steps", [])
    before, after = results.get("naive_before", float("nan")), results.get("naive_after", float("nan"))
    ceiling = (before + after) / 2
    held = [s["rate"] for s in steps if s["holds"]]
    best = max(held, default=0.0)
    m = results["machine"]
    verdict = f"{best:.0f} orders/s" if held else "none of the rates run"
    lines = [
        START,
        "",
        f"Run of {m['date']} on {m['cores']} cores ({m['cpu']}), Postgres {m['postgres']}; load average before "
        f"{m['load_before']}, after {m.get('load_after', '?')}."
        + (f" Machine state: {results['note']}." if results.get("note") else ""),
        f"Command: `bench/pipeline.sh {' '.join(_args(results['args']))}`"
        + (" (quick: a smoke run, not a measurement)." if quick else "."),
        "",
        f"**Highest rate that holds** (PUT p99 ≤ 50 ms, lag p99 ≤ 100 ms, no errors, every order projected): "
        f"**{verdict}**; naive pgbench (32 clients) {before:,.0f} tx/s before, {after:,.0f} after "
        f"(mean {ceiling:,.0f}): **{best / ceiling:.2f}× the naive ceiling** (goal ≥ 1.0).",
        "",
        "| offered /s | achieved /s | PUT p50 / p99 / max ms | lag p50 / p99 / max ms | errors | late starts | holds |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        errors = ", ".join(f"{k}: {v}" for k, v in s["statuses"].items() if k != "201") or "0"
        if s["unprojected"]:
            errors += f"; {s['unprojected']} unprojected"
        lines.append(
            f"| {s['rate']:.0f} | {s['achieved']:.0f} | "
            f"{_ms(s['put_p50'])} / {_ms(s['put_p99'])} / {_ms(s['put_max'])} | "
            f"{_ms(s['lag_p50'])} / {_ms(s['lag_p99'])} / {_ms(s['lag_max'])} | {errors} | {s['late_starts']} | "
            f"{'yes' if s['holds'] else '**no**'} |"
        )
    lines += ["", "CPU per order (ms) by process group, from `/proc` (utime + stime over the step and its drain):", ""]
    lines.append("| group | " + " | ".join(f"{s['rate']:.0f}/s" for s in steps) + " |")
    lines.append("|---|" + "---|" * len(steps))
    for group in SUITE:
        lines.append(f"| `{group}` | " + " | ".join(f"{s['cpu_ms_per_order'].get(group, 0):.2f}" for s in steps) + " |")
    lines.append(
        "| **suite total** | "
        + " | ".join(f"**{sum(s['cpu_ms_per_order'].get(g, 0) for g in SUITE):.2f}**" for s in steps)
        + " |"
    )
    lines.append(
        "| load generator (not counted) | " + " | ".join(f"{s['generator_ms_per_order']:.2f}" for s in steps) + " |"
    )
    lines += [
        "",
        "Every process of the suite runs with the repository's `.env` settings (`LOG_LEVEL=INFO`, pools, "
        "batch sizes) except the URLs, ports, `BTC_CAP=21000000` and Fluentd (off, as `run.sh --local`): "
        "`create_buy_order` and `fetch_buy_orders` under gunicorn with 2 uvicorn workers "
        "(`docker/gunicorn.conf.py`, the run images' command), `btc_price` with one, `outbox_relay` and "
        "`read_model_sync` as `python -m`, against the fake Coinbase. `postgres` is the backends of the run's "
        "two databases; `postgres (background)` (WAL writer, checkpointer, ...) and `rabbitmq` (the Erlang VM) "
        "serve anything else on this machine as well, so they are noisy on a shared one. The load generator "
        "(Python asyncio, this process, with the fake Coinbase) starts each PUT at its scheduled time; latency "
        "counts from then; *late starts* are PUTs it started more than 5 ms late.",
    ]
    if img is not None and steps:
        name = f"pipeline{'_quick' if quick else ''}.png"
        plot(steps, ceiling, img / name)
        lines += ["", f"![PUT p99 and projection lag against rate](img/{name})"]
    lines += ["", END]
    return "\n".join(lines)


def _args(args: dict[str, str]) -> list[str]:
    if args.get("quick") == "True":
        return ["--quick"]
    out = [f"--rates {args['rates']}", f"--seconds {float(args['seconds']):g}"]
    out.append(f"--pgbench-seconds {float(args['pgbench_seconds']):g}")
    return out + (["--all"] if args.get("all") == "True" else [])


def write_doc(path: Path, section: str) -> None:
    """Replace the section between the markers, or add it under its own heading."""
    text = path.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1]
    else:  # a new section, ahead of the tuning log (kept last) if there is one
        heading = "## Whole pipeline under open-loop load (issue 16)\n\n"
        head, tuning, tail = text.partition("## Tuning log")
        if tuning:
            text = head.rstrip("\n") + "\n\n" + heading + section + "\n\n" + tuning + tail
        else:
            text = text.rstrip("\n") + "\n\n" + heading + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--write", action="store_true")
    options = parser.parse_args()
    data = json.loads(options.results.read_text())
    quick_run = data["args"].get("quick") == "True"
    out = render(data, quick_run, REPO / "docs" / "img" if options.write else None)
    print(out)
    if options.write:
        write_doc(REPO / "docs" / "benchmarks.md", out)
