"""CPU time from /proc (Linux): of given processes, of a process and its children, of a process group.

A process started with `own_group=True` (benchkit.services, tests.support.processes) leads a group
whose id is its pid, so `group_cpu_seconds(proc.pid)` is the CPU of gunicorn's master and all its
workers. Times are utime + stime of every thread; a group's total also counts its members' reaped
children (cutime + cstime), so a worker that exits and is replaced keeps its share. Processes that
exit unreaped between two readings are lost: read around a steady state.

    with CpuMeter(group=proc.pid) as meter:
        run_load()
    meter.seconds  # CPU seconds the group used meanwhile

    before = snapshot({proc.pid: proc.name}, ("bench_db",))   # the whole suite, by group
    run_load()
    used(before, snapshot({proc.pid: proc.name}, ("bench_db",)))  # {"create_buy_order": s, "postgres": s, ...}
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    pgrp: int
    cpu_seconds: float  # utime + stime
    children_cpu_seconds: float  # cutime + cstime: reaped children


def stat(pid: int) -> ProcStat | None:
    """/proc/<pid>/stat, or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session ...
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        cpu_seconds=(int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
        children_cpu_seconds=(int(fields[13]) + int(fields[14])) / CLOCK_TICKS,
    )


def all_stats() -> list[ProcStat]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (found_stat := stat(int(entry.name))) is not None:
            found.append(found_stat)
    return found


def cmdline(pid: int) -> str:
    """/proc/<pid>/cmdline with spaces for the NULs ("" if it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (gone ones count 0)."""
    return sum(s.cpu_seconds for pid in pids if (s := stat(pid)) is not None)


def children(pid: int) -> list[int]:
    """The direct children of `pid` (gunicorn's workers of its master)."""
    return sorted(s.pid for s in all_stats() if s.ppid == pid)


def group_pids(pgid: int) -> list[int]:
    return sorted(s.pid for s in all_stats() if s.pgrp == pgid)


def group_cpu_seconds(pgid: int) -> float:
    """CPU of the live members of process group `pgid`, with their reaped children's."""
    return sum(s.cpu_seconds + s.children_cpu_seconds for s in all_stats() if s.pgrp == pgid)


class CpuMeter:
    """CPU used between enter and exit, by a process group (`group=`) or by fixed pids (`pids=`)."""

    def __init__(self, *, group: int | None = None, pids: list[int] | None = None) -> None:
        if (group is None) == (pids is None):
            raise ValueError("give group or pids")
        self.group, self.pids = group, pids
        self.start = 0.0
        self.seconds = 0.0

    def read(self) -> float:
        if self.group is not None:
            return group_cpu_seconds(self.group)
        return cpu_seconds(self.pids or [])

    def __enter__(self) -> CpuMeter:
        self.start = self.read()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        with contextlib.suppress(OSError):
            self.seconds = self.read() - self.start


Snapshot = dict[str, dict[int, float]]  # group -> pid -> CPU seconds so far


def snapshot(groups: dict[int, str], databases: tuple[str, ...] = ()) -> Snapshot:
    """CPU seconds so far of every process, by group: each process group of `groups` (pgid -> name; a
    member's reaped children included), the Postgres backends of `databases` ("postgres"), Postgres's
    background processes ("postgres (background)") and RabbitMQ's Erlang VM ("rabbitmq"); the last two
    serve anything else on this machine as well."""
    found: Snapshot = {name: {} for name in groups.values()}
    found |= {"postgres": {}, "postgres (background)": {}, "rabbitmq": {}}
    for process in all_stats():
        if process.pgrp in groups:
            found[groups[process.pgrp]][process.pid] = process.cpu_seconds + process.children_cpu_seconds
            continue
        command = cmdline(process.pid)
        if command.startswith("postgres: "):
            if any(f" {db} " in command for db in databases):
                found["postgres"][process.pid] = process.cpu_seconds
            elif "(" not in command and "autovacuum worker" not in command:
                found["postgres (background)"][process.pid] = process.cpu_seconds
        elif "beam.smp" in command and "rabbit" in command:
            found["rabbitmq"][process.pid] = process.cpu_seconds
    return found


def used(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds each group used between two snapshots (a process born in between: all of its time)."""
    return {g: sum(cpu - before.get(g, {}).get(pid, 0.0) for pid, cpu in pids.items()) for g, pids in after.items()}
