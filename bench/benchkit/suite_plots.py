"""bench/suite.py's plots (docs/img/bench_*.png), from the run's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchkit.stats import pct


def save(figure: Any, img: Path, name: str) -> str:
    """Write the figure as img/name, close it, return the name."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(img / name)
    plt.close(figure)
    return name


def plots(results: dict[str, Any], img: Path, quick: bool) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    names = {}
    suffix = "_quick" if quick else ""

    # Throughput against concurrency
    figure, axis = plt.subplots(figsize=(9, 5.5), dpi=110)
    clients = results["clients"]
    for workers, runs in results["put"].items():
        axis.plot(clients, [runs[c].ok_rate for c in clients], marker="o", label=f"PUT /buy_order, {workers} workers")
    for label, key, style in (("pgbench (a) own transaction", "a", "--"), ("pgbench (b) naive one cap row", "b", ":")):
        axis.plot(clients, [results["pgbench_mean"][key][c] for c in clients], linestyle=style, marker="s", label=label)
    axis.set_xscale("log", base=2)
    axis.set_xticks(clients, [str(c) for c in clients])
    axis.set_xlabel("concurrent clients")
    axis.set_ylabel("orders/s (transactions/s for pgbench)")
    axis.set_title("Create throughput against concurrency, with the database ceilings of the same run")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    names["throughput"] = save(figure, img, f"bench_throughput{suffix}.png")

    # Latency percentiles
    figure, axis = plt.subplots(figsize=(9, 5.5), dpi=110)
    qs = [50, 75, 90, 95, 99, 99.9]
    for label, values in results["latency_series"].items():
        axis.plot([str(q) for q in qs], [pct(values, q) for q in qs], marker="o", label=label)
    axis.axhline(50, color="red", linestyle="--", alpha=0.5, label="goal p99 50 ms (PUT)")
    axis.axhline(100, color="purple", linestyle=":", alpha=0.5, label="goal p99 100 ms (lag)")
    axis.set_yscale("log")
    axis.set_xlabel("percentile")
    axis.set_ylabel("ms (log scale)")
    axis.set_title(f"Latency at half the max create rate ({results['half_rate']:.0f} orders/s, open loop)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    names["latency"] = save(figure, img, f"bench_latency{suffix}.png")

    # Lag over time
    figure, axis = plt.subplots(figsize=(9, 5.5), dpi=110)
    db_lag = results["db_lag"]
    if db_lag:
        axis.scatter(
            [t for t, _ in db_lag],
            [v for _, v in db_lag],
            s=2,
            alpha=0.3,
            label="every order (read-model applied_at - write-model created_at)",
        )
    http_lag = results["lag_samples"]
    axis.scatter(
        [t for t, _ in http_lag],
        [v for _, v in http_lag],
        s=10,
        color="tab:red",
        label="sampled: 201 to 200 on GET /buy_orders/{id}",
    )
    axis.axhline(100, color="purple", linestyle=":", alpha=0.6, label="goal p99 100 ms")
    axis.set_xlabel("seconds into the run")
    axis.set_ylabel("projection lag (ms)")
    axis.set_title(f"Projection lag over time at {results['half_rate']:.0f} orders/s")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=8)
    names["lag"] = save(figure, img, f"bench_lag{suffix}.png")

    # Drain
    figure, axis = plt.subplots(figsize=(9, 4.5), dpi=110)
    drain = results["drain_series"]
    axis.plot([t for t, _ in drain], [n for _, n in drain])
    axis.set_xlabel("seconds since read_model_sync started")
    axis.set_ylabel("events in the read model")
    axis.set_title(f"read_model_sync draining a queue of {results['drain_events']:,} events")
    axis.grid(True, alpha=0.3)
    names["drain"] = save(figure, img, f"bench_drain{suffix}.png")
    return names
