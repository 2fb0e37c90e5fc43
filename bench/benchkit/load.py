"""pgbench runs of a script of bench/pgbench/ (the ceilings), parsed into transactions per second."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from benchkit import BENCH, log

PGBENCH = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"


@dataclass
class Pgbench:
    script: str
    clients: int
    tps: float
    latency_ms: float
    failed: int


def pgbench(db_url: str, script: str, clients: int, seconds: float) -> Pgbench:
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
    result = Pgbench(
        script,
        clients,
        float(tps.group(1)),
        float(latency.group(1)) if latency else 0,
        int(failed.group(1)) if failed else 0,
    )
    log(f"pgbench {script} c={clients}: {result.tps:,.0f} tx/s")
    return result
