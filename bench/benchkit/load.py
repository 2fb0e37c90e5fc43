"""Closed-loop load and database ceilings: wrk (one thread, a Lua script of bench/) and pgbench (a
script of bench/pgbench/), each run parsed into a result with the figures the reports use."""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
from dataclasses import dataclass

from benchkit import BENCH, log

PGBENCH = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"


@dataclass
class WrkResult:
    label: str
    clients: int
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    wrk_cpu: float  # cores used by wrk itself

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def ok_rate(self) -> float:
        return (self.requests - self.non_2xx) / self.seconds if self.seconds else 0.0


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(label: str, url: str, clients: int, seconds: float, script: str, *args: str) -> WrkResult:
    command = [
        "wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
        "-s", str(BENCH / script), url,
    ]  # fmt: skip
    if args:
        command += ["--", *args]
    before = children_cpu()
    out = subprocess.run(
        command, capture_output=True, text=True, check=False, env={**os.environ, "BENCH_DIR": str(BENCH)}
    )
    cpu = children_cpu() - before
    match = re.search(r"WRK_RESULT (.*)", out.stdout)
    if not match:
        raise SystemExit(f"wrk failed: {out.stdout}\n{out.stderr}")
    fields = dict(item.split("=") for item in match.group(1).split())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    seconds_run = int(fields["duration_us"]) / 1e6
    result = WrkResult(
        label=label,
        clients=clients,
        requests=int(fields["requests"]),
        seconds=seconds_run,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(fields[k]) for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout")),
        p50_ms=int(fields["p50_us"]) / 1000,
        p90_ms=int(fields["p90_us"]) / 1000,
        p99_ms=int(fields["p99_us"]) / 1000,
        wrk_cpu=cpu / seconds_run if seconds_run else 0,
    )
    log(
        f"wrk {label} c={clients}: {result.rate:,.0f} req/s, p50 {result.p50_ms:.1f} p99 {result.p99_ms:.1f} ms, "
        f"non-2xx {result.non_2xx}, socket errors {result.socket_errors}, wrk {result.wrk_cpu:.2f} cores"
    )
    return result


@dataclass
class PgbenchResult:
    label: str
    clients: int
    tps: float
    latency_ms: float
    failed: int


def pgbench(label: str, db_url: str, script: str, clients: int, seconds: float) -> PgbenchResult:
    command = [
        PGBENCH, "-n", "-f", str(BENCH / "pgbench" / script), "-c", str(clients), "-j", str(min(clients, 2)),
        "-T", str(max(1, round(seconds))), db_url,
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=False, timeout=seconds + 60)
    tps = re.search(r"tps = ([\d.]+)", out.stdout)
    if not tps:
        raise SystemExit(f"pgbench failed: {out.stdout}\n{out.stderr}")
    latency = re.search(r"latency average = ([\d.]+) ms", out.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", out.stdout)
    result = PgbenchResult(
        label,
        clients,
        float(tps.group(1)),
        float(latency.group(1)) if latency else 0,
        int(failed.group(1)) if failed else 0,
    )
    log(f"pgbench {label} c={clients}: {result.tps:,.0f} tx/s")
    return result
