"""What the figures were measured on (every report prints it)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
from pathlib import Path

from benchkit import REPO, pg


def commit(root: Path = REPO) -> str:
    """The tree's commit, with "+changes" if its working tree differs from it."""
    git = ["git", "-C", str(root)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "codebase", "docker", ".env"], capture_output=True, text=True, check=False
    )
    return (head.stdout.strip() or "(not a git checkout)") + (" +changes" if dirty.stdout.strip() else "")


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    total = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": str(os.cpu_count()),
        "cpu": cpu.group(1).strip() if cpu else "unknown",
        "memory": f"{int(total.group(1)) / 1024 / 1024:.1f} GiB" if total else "?",
        "postgres": str(pg.scalar(pg.PG_ADMIN, "SHOW server_version")).split()[0],
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


def describe(info: dict[str, str]) -> str:
    return (
        f"{info['date']}: {info['cpus']} CPUs ({info['cpu']}), {info['memory']}, PostgreSQL {info['postgres']}, "
        f"Python {info['python']}, Linux {info['kernel']}; load average {info['load']}"
    )
