"""A/B of the read path: `GET /buy_orders` of several versions of the code against the trivial
endpoint, interleaved in the same window (the cores are shared, so only same-window ratios count).

Each version is a git ref checked out into a temporary worktree (its `codebase/src` first on
PYTHONPATH); all serve one read model, migrated by each version in turn and filled in SQL. Per
round: trivial `/ping`, then each version at each page size, each service started alone (2
workers, docker/gunicorn.conf.py, LOG_LEVEL=WARNING) so that only one pool holds connections at
a time. Prints medians over the rounds.

Usage: bench/ab_read.py REF [REF ...] [--rounds 3] [--seconds 8] [--rows 100000]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchkit import REPO, log
from benchkit.load import wrk
from benchkit.pg import admin, db_url, execute
from benchkit.services import Processes

LOAD = """
INSERT INTO buy_order_view
    (sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount, idempotence_key, event_id)
SELECT g, gen_random_uuid(), timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second',
       (ARRAY['USD', 'EUR', 'GBP'])[1 + g %% 3], ((g %% 9900) + 100)::text || '.' || lpad((g %% 100)::text, 2, '0'),
       '97012.34', round((((g %% 9900) + 100) + (g %% 100) / 100.0) / 97012.34, 8)::text,
       gen_random_uuid(), gen_random_uuid()
FROM generate_series(1, %s) AS g
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("refs", nargs="+", help="git refs, oldest first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--extra-path", default="", help="appended to every version's PYTHONPATH")
    args = parser.parse_args()

    database = f"bench_ab_{secrets.token_hex(3)}"
    procs = Processes()
    trees = tempfile.TemporaryDirectory(prefix="bench_ab_")
    versions = {ref: ref for ref in args.refs}
    paths = {}
    for name, ref in versions.items():
        paths[name] = Path(trees.name) / name
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(paths[name]), ref], check=True)
    conn = admin()
    with conn.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{database}"')
    figures: dict[str, list[float]] = {}
    try:
        migrate = (
            "from btc_orders.services.migration.__main__ import migrate; import sys; migrate('read_model', sys.argv[1])"
        )
        for name in versions:  # the older migrations first; the newer code adds its own
            subprocess.run(
                [sys.executable, "-c", migrate, db_url(database, True)],
                check=True,
                env={"PYTHONPATH": str(paths[name] / "codebase" / "src"), "LOG_LEVEL": "WARNING"},
            )
        execute(db_url(database), LOAD, (args.rows,))
        execute(db_url(database), "VACUUM ANALYZE buy_order_view")
        env = {"READ_MODEL_DB_URL": db_url(database, True)}
        for round_number in range(1, args.rounds + 1):
            log(f"round {round_number}/{args.rounds}")
            trivial = procs.gunicorn("fetch_buy_orders", 2, {}, app="trivial_app:app")
            wrk("warm-up", f"{trivial.url}/ping", args.clients, 2, "get.lua")
            result = wrk("trivial /ping", f"{trivial.url}/ping", args.clients, args.seconds, "get.lua")
            figures.setdefault("trivial", []).append(result.rate)
            procs.stop(trivial)
            order = list(versions) if round_number % 2 else list(reversed(versions))
            for name in order:
                path = ":".join(filter(None, (str(paths[name] / "codebase" / "src"), args.extra_path)))
                fetch = procs.gunicorn("fetch_buy_orders", 2, {**env, "PYTHONPATH": path})
                wrk("warm-up", f"{fetch.url}/buy_orders?page_size=10", args.clients, 2, "get.lua")
                for size in args.sizes:
                    url = f"{fetch.url}/buy_orders?page_size={size}"
                    result = wrk(f"{name} page_size={size}", url, args.clients, args.seconds, "get.lua")
                    if result.non_2xx or result.socket_errors:
                        raise SystemExit(f"{name}: errors in the run:\n{fetch.log_text}")
                    figures.setdefault(f"{name} {size}", []).append(result.rate)
                procs.stop(fetch)
    finally:
        procs.stop_all()
        with conn.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        conn.close()
        for path in paths.values():
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], check=False)
        trees.cleanup()
    trivial_median = statistics.median(figures["trivial"])
    print(f"{' -> '.join(args.refs)}, {args.rows:,} rows, {args.clients} clients, {args.rounds} rounds")
    print("| run | req/s, median | rounds | ÷ trivial |")
    print("|---|---:|---|---:|")
    for label, rates in figures.items():
        median = statistics.median(rates)
        rounds = ", ".join(f"{rate:,.0f}" for rate in rates)
        print(f"| {label} | {median:,.0f} | {rounds} | {median / trivial_median:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
