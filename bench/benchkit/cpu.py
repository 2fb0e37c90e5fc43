"""CPU time of the whole suite from /proc (Linux), by process group.

Each process the run starts leads a process group (benchkit.services), so a group is gunicorn's
master and all its workers. Times are utime + stime of every thread; a group's total also counts
its members' reaped children (cutime + cstime), so a worker that exits and is replaced keeps its
share. Processes that exit unreaped between two readings are lost: read around a steady state.

    before = snapshot({proc.pid: proc.name}, ("bench_db",))
    run_load()
    used(before, snapshot({proc.pid: proc.name}, ("bench_db",)))  # {"create_buy_order": s, "postgres": s, ...}
"""

from __future__ import annotations

import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
Snapshot = dict[str, dict[int, float]]  # group -> pid -> CPU seconds so far


def _stat(pid: str) -> tuple[int, float, float] | None:
    """(process group, own CPU seconds, reaped children's CPU seconds), or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
    except OSError:
        return None
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return int(fields[2]), own, (int(fields[13]) + int(fields[14])) / CLOCK_TICKS


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def snapshot(groups: dict[int, str], databases: tuple[str, ...] = ()) -> Snapshot:
    """CPU seconds so far, by group: each process group of `groups` (pgid -> name), the Postgres backends
    of `databases` ("postgres"), Postgres's background processes ("postgres (background)") and RabbitMQ's
    Erlang VM ("rabbitmq"); the last two serve anything else on this machine as well."""
    found: Snapshot = {name: {} for name in groups.values()}
    found |= {"postgres": {}, "postgres (background)": {}, "rabbitmq": {}}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or (stat := _stat(entry.name)) is None:
            continue
        pgrp, own, reaped = stat
        if pgrp in groups:
            found[groups[pgrp]][int(entry.name)] = own + reaped
            continue
        command = _cmdline(entry.name)
        if command.startswith("postgres: "):
            if any(f" {db} " in command for db in databases):
                found["postgres"][int(entry.name)] = own
            elif "(" not in command and "autovacuum worker" not in command:
                found["postgres (background)"][int(entry.name)] = own
        elif "beam.smp" in command and "rabbit" in command:
            found["rabbitmq"][int(entry.name)] = own
    return found


def used(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds each group used between two snapshots (a process born in between: all of its time)."""
    return {g: sum(cpu - before.get(g, {}).get(pid, 0.0) for pid, cpu in pids.items()) for g, pids in after.items()}
