"""The pgbench ceilings of the write, on a throwaway write model migrated by the tree under test:

- project.sql: the service's own write (one statement: the key looked up, the BTC taken from one of
  16 cap slots, the order and its outbox row inserted), the ceiling of what the database allows it;
- naive.sql: the naive design (one cap row moved conditionally, then the order, in one transaction:
  every order waits for the row lock of the one before), the ceiling the pipeline is compared with.

Each at 1, 8, 32 and 64 clients, both scripts once before and once after (their mean is the ceiling).

    bench/ceilings.sh                    # 10 s per point, about 3 minutes
    bench/ceilings.sh --seconds 3 --clients 32
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys

from benchkit import pg, table
from benchkit.load import pgbench
from benchkit.machine import commit, describe, machine
from benchkit.services import Tree
from benchkit.stores import stores

SCRIPTS = ("project.sql", "naive.sql")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10, help="seconds per point")
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--src", default="", help="another checkout of the project (its migrations)")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    tree = Tree.at(args.src, "")
    info = machine()
    tag = f"{os.getpid()}_{secrets.token_hex(3)}"
    runs: dict[tuple[str, int], list[float]] = {}
    with stores(tree, f"bench_cw_{tag}", f"bench_cr_{tag}"):
        url = pg.db_url(f"bench_cw_{tag}")
        for _ in ("before", "after"):
            for script in SCRIPTS:
                for n in clients:
                    runs.setdefault((script, n), []).append(pgbench(url, script, n, args.seconds).tps)
            pg.execute(url, "VACUUM ANALYZE")
    rows = [
        [str(n), *(f"{sum(runs[s, n]) / 2:,.0f} ({' / '.join(f'{v:,.0f}' for v in runs[s, n])})" for s in SCRIPTS)]
        for n in clients
    ]
    print(f"\nMigrations of {tree.root} at {commit(tree.root)}; {args.seconds:g} s per point.")
    print(table(["clients", "project.sql tx/s (before / after)", "naive.sql tx/s (before / after)"], rows))
    print(f"\nMachine: {describe(info)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
