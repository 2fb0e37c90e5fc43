"""bench/suite.py's report: the figures of `run.results` formatted, the tables built, and both fed to
bench/templates/suite.md (benchkit.docs.render). The prose is in the template; every number and every
comparison in it ("met", "keeps up", "not the bottleneck") is computed here from the measurement."""

from __future__ import annotations

import argparse
import math
from typing import Any

from benchkit.docs import render, table, verdict
from benchkit.profiling import profile_markdown
from benchkit.stats import pct
from benchkit.suite_run import DEFAULT_POOL_SIZE, RATE_TTL_SECONDS

# Goals (docs/benchmarks.md states them; the verdicts come from these)
PUT_VS_OWN = 0.40
PUT_VS_NAIVE = 1.0
PUT_P99_MS = 50.0
GET_VS_TRIVIAL = 0.50
LAG_P99_MS = 100.0
DRAIN_VS_CREATE = 3.0
# The load generator is taken as no bottleneck when the trivial server serves this many times the max create
# rate through it and it uses under half a core during the create runs.
GENERATOR_HEADROOM = 2.0


def ms(value: float) -> str:
    return f"{value:.1f}"


def goals_table(r: dict[str, Any], args: argparse.Namespace, f: dict[str, Any]) -> str:
    c32 = f["c32"]
    put32, a32, b32 = f["put32"], f["a32"], f["b32"]
    lat = r["latency"].put_latency_ms
    lag_http, lag_run = f["lag_http"], r["lag_run"]
    rows = [
        [
            f"`PUT /buy_order` at {c32} clients ({f['put32_w']} workers) vs (a) own transaction in pgbench",
            f"{put32:,.0f} orders/s",
            f"{a32:,.0f} tx/s",
            f"{put32 / a32:.2f}",
            f"≥ {PUT_VS_OWN:.2f}",
            verdict(put32 / a32 >= PUT_VS_OWN),
        ],
        [
            f"`PUT /buy_order` at {c32} clients vs (b) naive one-row cap in pgbench",
            f"{put32:,.0f} orders/s",
            f"{b32:,.0f} tx/s",
            f"{put32 / b32:.2f}",
            f"≥ {PUT_VS_NAIVE:.1f}",
            verdict(put32 / b32 >= PUT_VS_NAIVE),
        ],
        [
            f"`PUT /buy_order` latency at half the max rate ({r['half_rate']:.0f}/s)",
            f"p99 {ms(pct(lat, 99))} ms (p50 {ms(pct(lat, 50))})",
            "–",
            "–",
            f"p99 ≤ {PUT_P99_MS:.0f} ms",
            verdict(pct(lat, 99) <= PUT_P99_MS),
        ],
    ]
    for size in (10, 100):
        ratio = f["get_ratios"][(size, 32)]
        rows.append(
            [
                f"`GET /buy_orders?page_size={size}` at 32 clients",
                f"{r['get'][(size, 32)].rate:,.0f} req/s",
                f"{r['get'][('trivial', 32)].rate:,.0f} req/s (trivial FastAPI)",
                f"{ratio:.2f}",
                f"≥ {GET_VS_TRIVIAL:.2f}",
                verdict(ratio >= GET_VS_TRIVIAL),
            ]
        )
    rows += [
        ["paging depth", "see the Paging depth section below", "`OFFSET`", "", "last/first p99 ≤ 1.10", "see below"],
        [
            f"projection lag at {r['half_rate']:.0f} orders/s (201 to 200 on `GET /buy_orders/{{id}}`)",
            f"p99 {ms(pct(lag_http, 99))} ms (p50 {ms(pct(lag_http, 50))}; {len(lag_http)} sampled orders, "
            f"{lag_run.lag_unseen} never seen)",
            "–",
            "–",
            f"p99 ≤ {LAG_P99_MS:.0f} ms",
            verdict(pct(lag_http, 99) <= LAG_P99_MS and lag_run.lag_unseen == 0),
        ],
        [
            f"`read_model_sync` drain of {r['drain_events']:,} queued events",
            f"{r['drain']['rate_wall']:,.0f} events/s (from process start; "
            f"{r['drain']['rate_applying']:,.0f}/s from the first row)",
            f"max create rate {f['max_rate']:,.0f}/s",
            f"{f['drain_ratio']:.1f}×",
            f"≥ {DRAIN_VS_CREATE:g}×",
            verdict(f["drain_ratio"] >= DRAIN_VS_CREATE),
        ],
        [
            "Coinbase calls per minute per currency at max load",
            f"max {f['cb_per_min']:.1f}/min"
            + (f", at most {f['cb_worst']:.0f} in any 60 s" if f["cb_worst"] is not None else ""),
            f"60 / `RATE_TTL_SECONDS` = {f['cb_limit']:.0f}",
            f"{f['cb_per_min'] / f['cb_limit']:.2f}",
            "never above",
            verdict(f["cb_ok"]),
        ],
    ]
    return table(
        ["benchmark", "figure", "ceiling (same run)", "ratio", "goal", "verdict"],
        ["---", "---:", "---:", "---:", "---", "---"],
        rows,
    )


def throughput_table(r: dict[str, Any], args: argparse.Namespace) -> str:
    header = [
        "clients",
        *(f"PUT {wk} workers orders/s (p50 / p99 ms)" for wk in args.workers),
        "pgbench (a) tx/s, before / after",
        "pgbench (b) tx/s, before / after",
        "PUT ÷ (a)",
        "PUT ÷ (b)",
    ]
    rows = []
    before, after = r["pgbench_before"], r["pgbench_after"]
    for c in args.clients:
        best = max(r["put"][wk][c].ok_rate for wk in args.workers)
        cells = [
            f"{r['put'][wk][c].ok_rate:,.0f} ({ms(r['put'][wk][c].p50_ms)} / {ms(r['put'][wk][c].p99_ms)})"
            for wk in args.workers
        ]
        a, b = r["pgbench_mean"]["a"][c], r["pgbench_mean"]["b"][c]
        rows.append(
            [
                str(c),
                *cells,
                f"{before['a'][c].tps:,.0f} / {after['a'][c].tps:,.0f}",
                f"{before['b'][c].tps:,.0f} / {after['b'][c].tps:,.0f}",
                f"{best / a:.2f}",
                f"{best / b:.2f}",
            ]
        )
    return table(header, ["---:"] * len(header), rows)


def five_statements_paragraph(r: dict[str, Any]) -> str:
    if 32 not in r["pgbench_before"].get("c", {}):
        return ""
    before, after = r["pgbench_before"]["c"][32].tps, r["pgbench_after"]["c"][32].tps
    one = (before + after) / 2
    ratio = one / r["pgbench_mean"]["a"][32]
    return (
        "For the record: the write as it was before the one-statement tuning (`bench/pgbench/five_statements.sql`, "
        f"BEGIN, three statements, COMMIT: five round trips) runs at {one:,.0f} tx/s at 32 clients (before / after: "
        f"{before:,.0f} / {after:,.0f}), {ratio:.2f}× the one statement of ceiling (a).\n\n"
    )


def pool_section(r: dict[str, Any], args: argparse.Namespace) -> str:
    variants = r.get("pool_variant")
    if not variants:
        return ""
    text = (
        f"Configuration variants (no code change), {args.workers[0]} workers: `DB_POOL_SIZE` is each worker's "
        "connections and also its request threads (capped at the pool, no overflow), so it is the worker's "
        f"concurrency. Default {DEFAULT_POOL_SIZE}; {', '.join(str(p) for p in variants)} for comparison.\n\n"
    )
    header = [
        "clients",
        f"default {DEFAULT_POOL_SIZE}, orders/s (p99 ms)",
        *(f"`DB_POOL_SIZE={p}`, orders/s (p99 ms)" for p in variants),
    ]
    rows = []
    for c in next(iter(variants.values())):
        base = r["put"][args.workers[0]][c]
        cells = [
            f"{v[c].ok_rate:,.0f} ({v[c].p99_ms:.0f}), {100 * (v[c].ok_rate / base.ok_rate - 1):+.0f}%"
            for v in variants.values()
        ]
        rows.append([str(c), f"{base.ok_rate:,.0f} ({base.p99_ms:.0f})", *cells])
    return text + table(header, ["---:"] * len(header), rows)


def latency_table(r: dict[str, Any]) -> str:
    rows = [
        [label, f"{len(v):,}", *(ms(pct(v, q)) for q in (50, 90, 99, 99.9)), ms(max(v) if v else math.nan)]
        for label, v in r["latency_series"].items()
    ]
    return table(["series", "count", "p50", "p90", "p99", "p99.9", "max (ms)"], ["---", *["---:"] * 6], rows)


def get_table(r: dict[str, Any], ratios: dict[tuple[int, int], float]) -> str:
    get = r["get"]
    rows = [
        [
            str(c),
            f"{get[('trivial', c)].rate:,.0f}",
            f"{get[('healthz', c)].rate:,.0f}",
            f"{get[(10, c)].rate:,.0f} ({ms(get[(10, c)].p99_ms)})",
            f"{ratios[(10, c)]:.2f}",
            f"{get[(100, c)].rate:,.0f} ({ms(get[(100, c)].p99_ms)})",
            f"{ratios[(100, c)]:.2f}",
        ]
        for c in (8, 32)
    ]
    header = [
        "clients",
        "trivial `/ping` req/s",
        "`/healthz` req/s",
        "page_size=10 req/s (p99 ms)",
        "÷ trivial",
        "page_size=100 req/s (p99 ms)",
        "÷ trivial",
    ]
    return table(header, ["---:"] * 7, rows)


def coinbase_table(cb: dict[str, dict[str, float]]) -> str:
    rows = [
        [
            currency,
            f"{s['calls']:.0f} in {s['span']:.0f}s",
            f"{s['per_minute']:.1f}",
            "n/a (run shorter than 60 s)" if math.isnan(s["max_in_60s"]) else f"{s['max_in_60s']:.0f}",
            f"{s['min_gap']:.2f}",
        ]
        for currency, s in cb.items()
    ]
    header = ["currency", "calls during the PUT throughput runs", "per minute", "most in any 60 s", "shortest gap (s)"]
    return table(header, ["---", "---:", "---:", "---:", "---:"], rows)


def report(r: dict[str, Any], info: dict[str, str], args: argparse.Namespace, names: dict[str, str]) -> str:
    """The suite's section of docs/benchmarks.md, from the run's results."""
    clients = args.clients
    max_rate, best_w, best_c = r["max_rate"]
    c32 = 32 if 32 in clients else clients[-1]
    put32_w = max(args.workers, key=lambda w: r["put"][w][c32].ok_rate)
    get = r["get"]
    cb = r["coinbase"]
    windows = [cb[c]["max_in_60s"] for c in cb]
    cb_worst = None if any(math.isnan(x) for x in windows) else max(windows)
    cb_per_min = max(cb[c]["per_minute"] for c in cb)
    cb_limit = 60 / RATE_TTL_SECONDS
    lag_http = [v for _, v in r["lag_samples"]]
    lag_db = [v for _, v in r["db_lag"]]
    drain, relay, wc = r["drain"], r["relay"], r["wrk_ceiling_put"]
    put_runs = [r["put"][wk][c] for wk in args.workers for c in clients]
    wrk_put_cpu = max(run.wrk_cpu for run in put_runs)
    headroom = wc.rate / max_rate
    f: dict[str, Any] = {
        "c32": c32,
        "put32_w": put32_w,
        "put32": r["put"][put32_w][c32].ok_rate,
        "a32": r["pgbench_mean"]["a"][c32],
        "b32": r["pgbench_mean"]["b"][c32],
        "lag_http": lag_http,
        "max_rate": max_rate,
        "drain_ratio": drain["rate_wall"] / max_rate,
        "get_ratios": {(s, c): get[(s, c)].rate / get[("trivial", c)].rate for s in (10, 100) for c in (8, 32)},
        "cb_worst": cb_worst,
        "cb_per_min": cb_per_min,
        "cb_limit": cb_limit,
        "cb_ok": cb_per_min <= cb_limit and (cb_worst is None or cb_worst <= cb_limit),
    }
    stored, answered = r["orders_stored"], r["put_2xx"]
    if stored < answered:
        stored_vs_answered = "fewer stored than answered: a replayed key answered 201 without a new order"
    else:
        stored_vs_answered = (
            f"{stored - answered:,} more stored than answered: wrk does not count the answers still in flight when a "
            "run ends, so stored may exceed answered by up to the client count per run"
        )
    generator_ok = headroom >= GENERATOR_HEADROOM and wrk_put_cpu < 0.5
    relay_ratio = relay["rate_sending"] / max_rate
    lat, lag_run = r["latency"], r["lag_run"]
    mode = "quick mode (`bench/run_all.sh --quick`)" if args.quick else "full mode (`bench/run_all.sh`)"
    profiles = profile_markdown("the create path (`PUT /buy_order`)", r["profile"])
    if "read_profile" in r:
        profiles += "\n" + profile_markdown("the read path (`GET /buy_orders?page_size=100`)", r["read_profile"])
    figures = {
        **info,
        "mode": mode,
        "elapsed": f"{r['elapsed']:.0f}",
        "load_start": f"{r['load_start'][0]:.2f}",
        "load_end": f"{r['load_end'][0]:.2f}",
        "rate_ttl": f"{RATE_TTL_SECONDS:g}",
        "seconds": f"{args.seconds:g}",
        "goals_table": goals_table(r, args, f),
        "img_throughput": names.get("throughput", "bench_throughput.png"),
        "img_latency": names.get("latency", "bench_latency.png"),
        "img_lag": names.get("lag", "bench_lag.png"),
        "img_drain": names.get("drain", "bench_drain.png"),
        "throughput_table": throughput_table(r, args),
        "five_statements_paragraph": five_statements_paragraph(r),
        "max_rate": f"{max_rate:,.0f}",
        "best_workers": best_w,
        "best_clients": best_c,
        "put_errors": sum(run.non_2xx + run.socket_errors for run in put_runs),
        "orders_stored": f"{stored:,}",
        "put_2xx": f"{answered:,}",
        "stored_vs_answered": stored_vs_answered,
        "generator_claim": "The load generator is not the bottleneck."
        if generator_ok
        else "The load generator may be the bottleneck.",
        "wrk_ceiling": f"{wc.rate:,.0f}",
        "wrk_ceiling_ratio": f"{headroom:.1f}",
        "wrk_ceiling_cpu": f"{wc.wrk_cpu:.2f}",
        "wrk_put_cpu": f"{wrk_put_cpu:.2f}",
        "pool_section": pool_section(r, args),
        "latency_table": latency_table(r),
        "latency_rate": f"{lat.rate:.0f}",
        "latency_seconds": f"{lat.seconds:.0f}",
        "latency_statuses": dict(lat.statuses),
        "late_starts": lat.late_starts,
        "connections": lat.connections,
        "read_rows": f"{r['read_rows']:,}",
        "get_table": get_table(r, f["get_ratios"]),
        "lag_rate": f"{lag_run.rate:.0f}",
        "lag_seconds": f"{lag_run.seconds:.0f}",
        "lag_http_n": len(lag_http),
        "lag_polls": f"{lag_run.polls:,}",
        "lag_http_p50": ms(pct(lag_http, 50)),
        "lag_http_p90": ms(pct(lag_http, 90)),
        "lag_http_p99": ms(pct(lag_http, 99)),
        "lag_http_max": ms(max(lag_http) if lag_http else math.nan),
        "lag_db_n": f"{len(lag_db):,}",
        "lag_db_p50": ms(pct(lag_db, 50)),
        "lag_db_p99": ms(pct(lag_db, 99)),
        "lag_db_max": ms(max(lag_db) if lag_db else math.nan),
        "lag_db_missing": r["db_lag_missing"],
        "drain_events": f"{r['drain_events']:,}",
        "publish_s": f"{drain['publish_s']:.1f}",
        "drain_wall": f"{drain['wall']:.1f}",
        "drain_first": f"{drain['first_seen']:.1f}",
        "drain_rate_wall": f"{drain['rate_wall']:,.0f}",
        "drain_rate_applying": f"{drain['rate_applying']:,.0f}",
        "drain_ratio": f"{f['drain_ratio']:.1f}",
        "drain_verdict": verdict(f["drain_ratio"] >= DRAIN_VS_CREATE, "met", "not met"),
        "relay_backlog": f"{relay['backlog']:,}",
        "relay_sent": f"{relay['sent']:,}",
        "relay_wall": f"{relay['wall']:.1f}",
        "relay_first": f"{relay['first']:.1f}",
        "relay_rate_wall": f"{relay['rate_wall']:,.0f}",
        "relay_rate_sending": f"{relay['rate_sending']:,.0f}",
        "relay_ratio": f"{relay_ratio:.2f}",
        "relay_keeps_up": "keeps up with the max create rate"
        if relay_ratio >= 1
        else "falls behind the max create rate",
        "coinbase_table": coinbase_table(cb),
        "coinbase_limit": f"{cb_limit:.0f}",
        "coinbase_per_min": f"{cb_per_min:.1f}",
        "coinbase_verdict": "never above" if f["cb_ok"] else "**above the limit**",
        "profiles": profiles,
    }
    return render("suite.md", figures)
