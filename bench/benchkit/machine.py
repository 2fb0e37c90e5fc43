"""What the figures were measured on (every report states it)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
from pathlib import Path


def _output(*command: str) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine(*tools: str) -> dict[str, str]:
    """CPUs, memory, Python, kernel, date; with `tools` ("wrk", "pgbench", "rabbitmq") their versions too.
    The Postgres version comes from the server (benchkit.pg), so it is not here."""
    meminfo = Path("/proc/meminfo").read_text()
    total = re.search(r"MemTotal:\s+(\d+)", meminfo)
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and (match := re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())):
        cpu = match.group(1).strip()
    info = {
        "nproc": _output("nproc") or str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{int(total.group(1)) / 1024 / 1024:.1f} GiB" if total else "?",
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if "wrk" in tools:
        info["wrk"] = _output("wrk", "-v").split("\n")[0].strip()
    if "pgbench" in tools:
        from benchkit.load import PGBENCH

        info["pgbench"] = _output(PGBENCH, "--version")
    if "rabbitmq" in tools:
        info["rabbitmq"] = _output("rabbitmqctl", "-q", "eval", "rabbit_misc:version().").strip('"') or "?"
    return info
