"""bench/suite.py's phases on the write side, one function each, in the order the suite runs them:
ceilings of the HTTP stack and of the database, PUT throughput, pool variants, the profile, PUT
latency. Each adds its figures to `run.results`."""

from __future__ import annotations

import random
import time

from benchkit import log, pg
from benchkit.load import PgbenchResult, WrkResult, pgbench, wrk
from benchkit.openloop import log_open_loop, run_open_loop
from benchkit.profiling import profile
from benchkit.suite_run import POOL_VARIANTS, Run, coinbase_stats

NOT_PGBENCH = "SELECT count(*) FROM buy_order WHERE request_id IS DISTINCT FROM 'pgbench'"


def nonce() -> str:
    """put.lua's seed: unique idempotence keys per run."""
    return str(random.getrandbits(30))


def http_ceilings(run: Run) -> None:
    """wrk against bench/trivial_app.py (PUT with put.lua, GET /ping): the HTTP stack's and wrk's own ceiling."""
    trivial = run.procs.gunicorn("fetch_buy_orders", 2, {}, app="trivial_app:app")
    assert trivial.url
    run.results["wrk_ceiling_put"] = wrk("trivial PUT", trivial.url, 32, run.args.seconds, "put.lua", "1")
    run.results["trivial_get"] = {
        c: wrk("trivial GET /ping", f"{trivial.url}/ping", c, run.args.seconds, "get.lua") for c in (8, 32)
    }
    run.procs.stop(trivial)


def pgbench_round(run: Run, round_name: str) -> dict[str, dict[int, PgbenchResult]]:
    """(a) the service's own write, (b) the naive one-row cap, at every client count; (c) the write before
    the one-statement tuning, at 32 clients only (for the record, not a ceiling)."""
    out: dict[str, dict[int, PgbenchResult]] = {"a": {}, "b": {}, "c": {}}
    url, seconds = run.write_url(), run.args.seconds
    for c in run.args.clients:
        out["a"][c] = pgbench(f"(a) {round_name}", url, "project.sql", c, seconds)
        out["b"][c] = pgbench(f"(b) {round_name}", url, "naive.sql", c, seconds)
        if c == 32:
            out["c"][c] = pgbench(f"(c) {round_name}", url, "five_statements.sql", c, seconds)
    return out


def pgbench_before(run: Run) -> None:
    # create_buy_order fills the cap slots at start (BTC_CAP, 21,000,000 BTC: enough for pgbench).
    run.procs.stop(run.procs.gunicorn("create_buy_order", run.args.workers[0], run.create_env))
    run.results["pgbench_before"] = pgbench_round(run, "before")
    # pgbench left ~100,000 new rows: vacuum now, so that autovacuum does not slow the first PUT runs alone.
    pg.execute(run.write_url(), "VACUUM ANALYZE")


def put_throughput(run: Run) -> None:
    """wrk at every client count against create_buy_order with each WEB_CONCURRENCY, then the pool
    variants (DB_POOL_SIZE is each worker's connections and request threads), with Coinbase's calls
    counted over the whole window."""
    args = run.args
    orders_before = pg.scalar(run.write_url(), NOT_PGBENCH)
    put_runs: list[WrkResult] = []
    window_start = time.monotonic()
    run.results["put"] = {}
    for workers in args.workers:
        create = run.procs.gunicorn("create_buy_order", workers, run.create_env)
        assert create.url
        put_runs.append(wrk("warm-up", create.url, 8, 2, "put.lua", nonce()))
        runs = {c: wrk(f"PUT {workers}w", create.url, c, args.seconds, "put.lua", nonce()) for c in args.clients}
        put_runs += runs.values()
        run.results["put"][workers] = runs
        run.procs.stop(create)
    run.results["pool_variant"] = {}
    for pool in POOL_VARIANTS:
        create = run.procs.gunicorn("create_buy_order", args.workers[0], {**run.create_env, "DB_POOL_SIZE": str(pool)})
        assert create.url
        put_runs.append(wrk("warm-up", create.url, 8, 2, "put.lua", nonce()))
        label = f"PUT {args.workers[0]}w DB_POOL_SIZE={pool}"
        runs = {c: wrk(label, create.url, c, args.seconds, "put.lua", nonce()) for c in args.clients if c >= 32}
        put_runs += runs.values()
        run.results["pool_variant"][pool] = runs
        run.procs.stop(create)
    window_end = time.monotonic()
    # wrk's warm-ups made orders too: they are counted on both sides.
    run.results["orders_stored"] = pg.scalar(run.write_url(), NOT_PGBENCH) - orders_before
    run.results["put_2xx"] = sum(result.requests - result.non_2xx for result in put_runs)
    run.results["coinbase"] = coinbase_stats(run.calls.stamps, window_start, window_end)
    best_workers, best_clients = max(
        ((w, c) for w in args.workers for c in args.clients), key=lambda wc: run.results["put"][wc[0]][wc[1]].ok_rate
    )
    run.results["max_rate"] = (run.results["put"][best_workers][best_clients].ok_rate, best_workers, best_clients)


def pgbench_after(run: Run) -> None:
    """pgbench again after the HTTP runs: the ceiling is the mean of before and after."""
    before = run.results["pgbench_before"]
    after = run.results["pgbench_after"] = pgbench_round(run, "after")
    run.results["pgbench_mean"] = {
        key: {c: (before[key][c].tps + after[key][c].tps) / 2 for c in run.args.clients} for key in ("a", "b")
    }


def profile_create(run: Run) -> None:
    """py-spy on every create_buy_order worker under wrk, at the best worker count."""
    _, best_workers, best_clients = run.results["max_rate"]
    create = run.procs.gunicorn("create_buy_order", best_workers, run.create_env)
    assert create.url
    clients = best_clients if best_clients >= 8 else 32
    run.results["profile"] = profile(create, create.url, "put.lua", clients, run.args.seconds, nonce())
    run.procs.stop(create)


def put_latency(run: Run) -> None:
    """Open loop at half the max rate, relay and worker stopped. The create_buy_order started here stays
    up for the lag run (`run.create`)."""
    max_rate, best_workers, _ = run.results["max_rate"]
    half = run.results["half_rate"] = max_rate / 2
    run.create = run.procs.gunicorn("create_buy_order", best_workers, run.create_env)
    assert run.create.url
    wrk("warm-up", run.create.url, 8, 2, "put.lua", nonce())
    seconds = run.args.seconds * 2
    log(f"PUT latency: open loop at {half:.0f}/s for {seconds:.0f}s")
    run.results["latency"] = run_open_loop(run.create.url, half, seconds)
    log_open_loop("PUT latency", run.results["latency"])
