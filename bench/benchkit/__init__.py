"""What the benchmark scripts in bench/ share (each script is run as `python bench/<name>.py`, so
bench/ is on sys.path and `import benchkit` finds this package).

- `benchkit.services`: start the suite's processes (gunicorn or `python -m`) and stop them; built
  on the launcher the tests use, `tests.support.processes` (codebase/tests/support/processes.py).
- `benchkit.cpu`: CPU time from /proc, of processes, of their children, of a process group.
- `benchkit.pg`: throwaway databases on the local Postgres, one-shot queries.
- `benchkit.load`: wrk and pgbench runs; `benchkit.openloop`: the open-loop generator.
- `benchkit.stats`, `benchkit.machine`, `benchkit.docs` (report templates and docs/benchmarks.md
  sections), `benchkit.profiling` (py-spy).
- `benchkit.suite_*` and `benchkit.paging_*`: the phases and reports of bench/suite.py and
  bench/paging.py.

The launcher and the fake Coinbase live with the tests, in codebase/tests/support/; this package
puts codebase/ on sys.path once, here, so that they import as the tests import them
(`tests.support.…`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
TEMPLATES = BENCH / "templates"
if str(REPO / "codebase") not in sys.path:
    sys.path.insert(0, str(REPO / "codebase"))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
