"""What bench/pipeline.py, bench/paging.py and bench/ceilings.py share (each is run as
`python bench/<name>.py`, so bench/ is on sys.path and `import benchkit` finds this package).

The process launcher and the fake Coinbase live with the tests (codebase/tests/support/); this
package puts codebase/ on sys.path once, here, so that they import as the tests import them
(`tests.support.processes`, `tests.support.fake_coinbase`). Nothing of `btc_orders` is imported:
the suite's processes and the migrations run as subprocesses of the tree under test (`Tree`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
if str(REPO / "codebase") not in sys.path:
    sys.path.insert(0, str(REPO / "codebase"))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table, numbers right-aligned, for the terminal (also readable as Markdown)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
