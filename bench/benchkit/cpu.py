"""CPU time from /proc (Linux): of given processes, of a process and its children, of a process group.

A process started with `own_group=True` (benchkit.services, tests.support.processes) leads a group
whose id is its pid, so `group_cpu_seconds(proc.pid)` is the CPU of gunicorn's master and all its
workers. Times are utime + stime of every thread; a group's total also counts its members' reaped
children (cutime + cstime), so a worker that exits and is replaced keeps its share. Processes that
exit unreaped between two readings are lost: read around a steady state.

    with CpuMeter(group=proc.pid) as meter:
        run_load()
    meter.seconds  # CPU seconds the group used meanwhile
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
