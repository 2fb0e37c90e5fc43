"""The whole pipeline under open-loop load, as a user runs it in production.

Every process of the suite as production starts it (benchkit/pipeline_run.py), the throwaway
databases and vhost migrated and made by the run, Coinbase played by the tests' fake. Per rate:
`PUT /buy_order` on a fixed schedule with unique keys (latency from the scheduled start, so a
stalled server is not hidden), then the projection lag of every order from the databases' own
clocks (read model `applied_at` - write model `created_at`), and the CPU of every process group
from /proc. Rates are stepped until an SLO breaks (PUT p99 <= 50 ms, lag p99 <= 100 ms, no errors,
every order projected). pgbench of the naive one-cap-row write (bench/pgbench/naive.sql, 32 clients)
runs before and after, in the same run: the ceiling the highest rate that holds is compared with.

    bench/pipeline.sh --rates 500,600,700,800 --seconds 20          # about 4 minutes
    bench/pipeline.sh --quick                                       # smoke run, about a minute
    bench/pipeline.sh --src /tmp/before --json before.json          # the same on another checkout (A/B)
    bench/pipeline.sh --render before.json --plots /tmp/plots       # print a saved run again, with its plot
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from benchkit import pipeline_report
from benchkit.pipeline_run import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,200,300,400,500,600,700,800", help="orders/s, stepped in this order")
    parser.add_argument("--seconds", type=float, default=20, help="seconds of load per rate")
    parser.add_argument("--pgbench-seconds", type=float, default=10)
    parser.add_argument("--all", action="store_true", help="run every rate, not only until the first breaks")
    parser.add_argument("--quick", action="store_true", help="smoke run: rates 50,100, 4 s each, pgbench 3 s")
    parser.add_argument("--workers", type=int, default=0, help="WEB_CONCURRENCY of create and fetch (default: .env's)")
    parser.add_argument(
        "--src", default="", help="another checkout of the project to run (its codebase/src, docker/, .env, migrations)"
    )
    parser.add_argument("--python", default="", help="the interpreter of --src (default: its .venv's, else this one)")
    parser.add_argument("--note", default="", help="the machine's state, printed with the figures")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--render", type=Path, metavar="RESULTS", help="no run: print the results of --json again")
    parser.add_argument("--plots", type=Path, metavar="FOLDER", help="write pipeline.png into this folder")
    args = parser.parse_args()
    if args.render:
        results = json.loads(args.render.read_text())
    else:
        if args.quick:
            args.rates, args.seconds, args.pgbench_seconds = "50,100", 4, 3
        rates = [float(r) for r in args.rates.split(",")]
        limit = 120 + len(rates) * (args.seconds + 40) + 2 * args.pgbench_seconds
        signal.signal(signal.SIGTERM, lambda signum, _: (_ for _ in ()).throw(SystemExit(128 + signum)))
        signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(SystemExit("time limit reached")))
        signal.alarm(int(limit))
        try:
            results = run(args, rates)
        finally:
            signal.alarm(0)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    print(pipeline_report.report(results))
    if args.plots and results.get("steps"):
        print(f"\nplot: {pipeline_report.plot(results, args.plots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
