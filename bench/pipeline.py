"""The whole pipeline under open-loop load, as a user runs it in production (issue 16).

create_buy_order and fetch_buy_orders under gunicorn with 2 uvicorn workers each and btc_price
with one (docker/gunicorn.conf.py, the run images' command), outbox_relay and read_model_sync as
`python -m`, every process with the repository's `.env` settings (LOG_LEVEL=INFO, pools, batch
sizes) except the URLs, the ports, `BTC_CAP` (21,000,000) and Fluentd (off, as `run.sh --local`).
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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "codebase" / "tests" / "support"))
sys.path.insert(0, str(REPO / "bench"))
from fake_coinbase import FakeCoinbase  # noqa: E402

from pipeline_load import cpu_by_group, cpu_used, open_loop, self_cpu  # noqa: E402
from pipeline_report import render, write_doc  # noqa: E402

PG_ADMIN = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
GUNICORN_CONF = REPO / "docker" / "gunicorn.conf.py"
PGBENCH = "pgbench"
# Settings the run sets itself (everything else comes from the repository's .env).
OWN = re.compile(r"_URL$|_PORT$|^FLUENTD_HOST$|^BTC_CAP$|^PUBLISH_ADDRESS$|^GATEWAY_")
SLO_PUT_P99_MS, SLO_LAG_P99_MS = 50.0, 100.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def dotenv() -> dict[str, str]:
    values = {}
    for line in (REPO / ".env").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#") and not OWN.search(name.strip()):
            values[name.strip()] = value.strip()
    return values


# ---------------------------------------------------------------------------
# Processes and their CPU


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    workdir: tempfile.TemporaryDirectory[str]
    url: str = ""

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (Path(self.workdir.name) / "out.log").read_text(errors="replace")[-3000:]
        return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.workdir.cleanup()


def start(name: str, command: list[str], env: dict[str, str], port_var: str | None = None) -> Service:
    """Start one service in its own session (its process group is what /proc CPU is summed over)
    and an empty working directory (no .env read: the environment is complete)."""
    workdir = tempfile.TemporaryDirectory(prefix=f"pipeline_{name}_")
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1", **env}
    url = ""
    if port_var:
        port = free_port()
        full[port_var] = str(port)
        url = f"http://127.0.0.1:{port}"
    with open(Path(workdir.name) / "out.log", "wb") as out:
        popen = subprocess.Popen(
            command, cwd=workdir.name, env=full, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    service = Service(name, popen, workdir, url)
    if url:
        wait_ready(service)
    return service


def wait_ready(service: Service, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        if service.process.poll() is not None:
            raise SystemExit(f"{service.name} exited with {service.process.returncode}:\n{service.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(service.url + "/readyz", timeout=2, trust_env=False).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"{service.name} not ready within {timeout}s:\n{service.log_tail()}")
        time.sleep(0.2)


# ---------------------------------------------------------------------------
# Postgres and pgbench


def sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    connection = psycopg2.connect(url, connect_timeout=5)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        connection.close()


def db_url(name: str, driver: bool = False) -> str:
    return f"postgresql{'+psycopg2' if driver else ''}://postgres@127.0.0.1:5432/{name}"


def pgbench_naive(url: str, seconds: float) -> float:
    command = [
        PGBENCH,
        "-n",
        "-f",
        str(REPO / "bench" / "pgbench" / "naive.sql"),
        "-c",
        "32",
        "-j",
        "2",
        "-T",
        str(max(1, round(seconds))),
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds + 60)
    match = re.search(r"tps = ([\d.]+)", out.stdout)
    if not match:
        raise SystemExit(f"pgbench failed: {out.stdout}\n{out.stderr}")
    log(f"pgbench naive.sql, 32 clients: {float(match.group(1)):,.0f} tx/s")
    return float(match.group(1))


# ---------------------------------------------------------------------------
# One step


def step(
    rate: float, seconds: float, create: Service, services: list[Service], write: str, read: str
) -> dict[str, Any]:
    first = sql(write, "SELECT coalesce(max(sequence), 0) FROM buy_order")[0][0]
    sessions, databases = {s.process.pid: s.name for s in services}, (db_name(write), db_name(read))
    before, generator_before, wall = (
        cpu_by_group(sessions, databases),
        self_cpu(),
        time.monotonic(),
    )
    load = asyncio.run(open_loop(create.url, rate, seconds))
    generator = self_cpu() - generator_before
    # The tail: until every order of the step is in the read model (or 15 s), CPU still counted.
    stored = sql(write, "SELECT count(*) FROM buy_order WHERE sequence > %s", (first,))[0][0]  # sequences may skip
    deadline = time.monotonic() + 15
    while (
        sql(read, "SELECT count(*) FROM buy_order_view WHERE sequence > %s", (first,))[0][0] < stored
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    used = cpu_used(before, cpu_by_group(sessions, databases))
    wall = time.monotonic() - wall
    created = sql(write, "SELECT sequence, extract(epoch from created_at) FROM buy_order WHERE sequence > %s", (first,))
    applied = dict(
        sql(read, "SELECT sequence, extract(epoch from applied_at) FROM buy_order_view WHERE sequence > %s", (first,))
    )
    lag = [(float(applied[s]) - float(c)) * 1000 for s, c in created if s in applied]
    orders = len(created)
    errors = sum(n for status, n in load.statuses.items() if status != "201")
    result: dict[str, Any] = {
        "rate": rate, "seconds": seconds, "achieved": load.statuses.get("201", 0) / max(load.seconds, 1e-9),
        "orders": orders, "statuses": load.statuses, "errors": errors, "late_starts": load.late_starts,
        "connections": load.connections, "wall": wall,
        "put_p50": pct(load.latency_ms, 50), "put_p99": pct(load.latency_ms, 99),
        "put_max": max(load.latency_ms, default=0),
        "lag_p50": pct(lag, 50), "lag_p99": pct(lag, 99), "lag_max": max(lag, default=0),
        "unprojected": orders - len(lag),
        "cpu_ms_per_order": {g: 1000 * s / max(orders, 1) for g, s in used.items()},
        "cores": {g: s / wall for g, s in used.items()},
        "generator_ms_per_order": 1000 * generator / max(orders, 1),
    }  # fmt: skip
    result["holds"] = bool(
        errors == 0
        and result["unprojected"] == 0
        and result["put_p99"] <= SLO_PUT_P99_MS
        and result["lag_p99"] <= SLO_LAG_P99_MS
    )
    log(
        f"{rate:.0f}/s: {orders} orders, PUT p50 {result['put_p50']:.1f} p99 {result['put_p99']:.1f} ms, "
        f"lag p50 {result['lag_p50']:.1f} p99 {result['lag_p99']:.1f} ms, errors {errors}, "
        f"unprojected {result['unprojected']}, CPU {sum(result['cpu_ms_per_order'].values()):.2f} ms/order "
        f"(generator {result['generator_ms_per_order']:.2f}): "
        f"{'holds' if result['holds'] else 'BREAKS'}"
    )
    return result


def db_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def machine() -> dict[str, str]:
    model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    return {
        "cores": str(os.cpu_count()),
        "cpu": model.group(1).strip() if model else "?",
        "postgres": str(sql(PG_ADMIN, "SHOW server_version")[0][0]).split()[0],
        "load_before": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ---------------------------------------------------------------------------
# The run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="100,150,200,300,400", help="orders/s, stepped in this order")
    parser.add_argument("--seconds", type=float, default=20, help="seconds of load per rate")
    parser.add_argument("--pgbench-seconds", type=float, default=10)
    parser.add_argument("--all", action="store_true", help="run every rate, not only until the first breaks")
    parser.add_argument("--quick", action="store_true", help="smoke run: rates 50,100, 4 s each, pgbench 3 s")
    parser.add_argument("--workers", type=int, default=2, help="WEB_CONCURRENCY of create and fetch (default 2)")
    parser.add_argument("--note", default="", help="the machine's state, printed with the figures")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--write", action="store_true", help="write the section of docs/benchmarks.md and the plot")
    args = parser.parse_args()
    if args.quick:
        args.rates, args.seconds, args.pgbench_seconds = "50,100", 4, 3
    rates = [float(r) for r in args.rates.split(",")]
    limit = 120 + len(rates) * (args.seconds + 40) + 2 * args.pgbench_seconds
    signal.signal(signal.SIGTERM, lambda signum, _: (_ for _ in ()).throw(SystemExit(128 + signum)))
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(SystemExit("time limit reached")))
    signal.alarm(int(limit))

    tag = f"{os.getpid()}_{secrets.token_hex(3)}"
    write_db, read_db, vhost = f"bench_pw_{tag}", f"bench_pr_{tag}", f"bench_p_{tag}"
    write, read = db_url(write_db), db_url(read_db)
    for statement in (f'CREATE DATABASE "{write_db}"', f'CREATE DATABASE "{read_db}"'):
        sql(PG_ADMIN, statement)
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    coinbase = FakeCoinbase().start()
    services: list[Service] = []
    results: dict[str, Any] = {
        "machine": machine(),
        "note": args.note,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    try:
        from btc_orders.services.migration.__main__ import migrate

        migrate("write_model", db_url(write_db, True))
        migrate("read_model", db_url(read_db, True))
        sql(
            write,
            "CREATE TABLE bench_naive_cap (id int PRIMARY KEY, used_satoshis bigint NOT NULL,"
            " cap_satoshis bigint NOT NULL); INSERT INTO bench_naive_cap VALUES (1, 0, 2100000000000000)",
        )
        results["naive_before"] = pgbench_naive(write, args.pgbench_seconds)
        sql(write, "VACUUM ANALYZE")

        env = {**dotenv(), "LOG_LEVEL": "INFO", "FLUENTD_HOST": "", "WEB_CONCURRENCY": str(args.workers),
               "WRITE_MODEL_DB_URL": db_url(write_db, True), "READ_MODEL_DB_URL": db_url(read_db, True),
               "AMQP_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}", "BTC_CAP": "21000000",
               "COINBASE_API_URL": coinbase.url}  # fmt: skip
        gunicorn = [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONF)]
        btc_price = start("btc_price", gunicorn, {**env, "BTC_ORDERS_SERVICE": "btc_price"}, "BTC_PRICE_PORT")
        services.append(btc_price)
        env["BTC_PRICE_URL"] = btc_price.url
        create = start(
            "create_buy_order", gunicorn, {**env, "BTC_ORDERS_SERVICE": "create_buy_order"}, "CREATE_BUY_ORDER_PORT"
        )
        services.append(create)
        services.append(
            start(
                "fetch_buy_orders", gunicorn, {**env, "BTC_ORDERS_SERVICE": "fetch_buy_orders"}, "FETCH_BUY_ORDERS_PORT"
            )
        )
        for name, port_var in (
            ("outbox_relay", "OUTBOX_RELAY_METRICS_PORT"),
            ("read_model_sync", "READ_MODEL_SYNC_METRICS_PORT"),
        ):
            services.append(
                start(name, [sys.executable, "-m", f"btc_orders.services.{name}"], {**env, port_var: str(free_port())})
            )
        time.sleep(1)
        for service in services:
            if service.process.poll() is not None:
                raise SystemExit(f"{service.name} exited:\n{service.log_tail()}")

        with contextlib.suppress(PermissionError, OSError):
            os.setpriority(os.PRIO_PROCESS, 0, -10)  # the generator must not queue behind what it measures
        log(f"warm-up: {rates[0]:.0f}/s for 3 s")
        asyncio.run(open_loop(create.url, rates[0], 3))
        time.sleep(1)
        results["steps"] = []
        for rate in rates:
            results["steps"].append(step(rate, args.seconds, create, services, write, read))
            if not results["steps"][-1]["holds"] and not args.all:
                break
            time.sleep(1)
        with contextlib.suppress(PermissionError, OSError):
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        for service in reversed(services):
            service.stop()
        services.clear()
        results["naive_after"] = pgbench_naive(write, args.pgbench_seconds)
    finally:
        for service in reversed(services):
            with contextlib.suppress(Exception):
                service.stop()
        coinbase.stop()
        for db in (write_db, read_db):
            with contextlib.suppress(Exception):
                sql(PG_ADMIN, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, capture_output=True, timeout=60)
        signal.alarm(0)

    results["machine"]["load_after"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    section = render(results, quick=args.quick, img=REPO / "docs" / "img" if args.write else None)
    print(section)
    if args.write:
        write_doc(REPO / "docs" / "benchmarks.md", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
