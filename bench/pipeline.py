"""The whole pipeline under open-loop load, as a user runs it in production (issue 16).

create_buy_order and fetch_buy_orders under gunicorn with `.env`'s WEB_CONCURRENCY uvicorn workers
each (`--workers`) and btc_price with one (docker/gunicorn.conf.py, the run images' command),
outbox_relay and read_model_sync as `python -m`, every process with the repository's `.env`
settings (LOG_LEVEL=INFO, pools, batch sizes) except the URLs, the ports, `BTC_CAP` (21,000,000)
and Fluentd (off, as `run.sh --local`).
Coinbase is codebase/tests/support/fake_coinbase.py; the databases and the vhost are throwaway.

Per rate: PUT /buy_order at a fixed schedule with unique keys (latency from the scheduled start,
so a stalled server is not hidden), then the projection lag of every order from the databases'
own clocks (read model `applied_at` - write model `created_at`), and the CPU of every process
group from /proc over the step. Rates are stepped until an SLO breaks (PUT p99 <= 50 ms, lag
p99 <= 100 ms, no errors). pgbench of the naive one-cap-row write (bench/pgbench/naive.sql,
32 clients) runs before and after, in the same run: the goal is the highest rate that holds
divided by that ceiling.

    bench/pipeline.sh --rates 100,150,200,300 --seconds 20      # ~3 minutes
    bench/pipeline.sh --quick                                   # smoke run, under a minute
    bench/pipeline.sh --write                                   # also docs/benchmarks.md + plot
    bench/pipeline.sh --json run.json; bench/pipeline.sh --render run.json --write   # re-render a run

The run is benchkit/pipeline_run.py, the report benchkit/pipeline_report.py with its prose in
bench/templates/pipeline.md.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from benchkit import REPO, pipeline_report
from benchkit.pipeline_run import dotenv, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,150,200,300,400", help="orders/s, stepped in this order")
    parser.add_argument("--seconds", type=float, default=20, help="seconds of load per rate")
    parser.add_argument("--pgbench-seconds", type=float, default=10)
    parser.add_argument("--all", action="store_true", help="run every rate, not only until the first breaks")
    parser.add_argument("--quick", action="store_true", help="smoke run: rates 50,100, 4 s each, pgbench 3 s")
    parser.add_argument(
        "--workers",
        type=int,
        default=int(dotenv()["WEB_CONCURRENCY"]),
        help="WEB_CONCURRENCY of create and fetch (default: the repository's .env, as a user runs it)",
    )
    parser.add_argument(
        "--src",
        default="",
        help="a folder holding another btc_orders package (an A/B: e.g. a `git archive` of an "
        "older codebase/src), first on every suite process's PYTHONPATH; the run's own code stays the working tree's",
    )
    parser.add_argument("--note", default="", help="the machine's state, printed with the figures")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--render", type=Path, metavar="RESULTS", help="no run: render the results of --json again")
    parser.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md and the plot")
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
    section = pipeline_report.report(results, img=REPO / "docs" / "img" if args.write else None)
    print(section)
    if args.write:
        pipeline_report.write(REPO / "docs" / "benchmarks.md", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
