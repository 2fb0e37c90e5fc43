"""`python -m tests.chaos --duration 600 --seed 7` (from codebase/): a chaos run and its report.

Exits 1 when an invariant or an availability property was broken.
"""

import argparse
import sys
from pathlib import Path

from tests.chaos.harness import run, summary


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--duration", type=float, default=600, help="seconds of load and faults (default 600)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the fault schedule and the clients")
    parser.add_argument("--report", type=Path, default=None, help="also write the JSON report here")
    parser.add_argument("--logs", type=Path, default=None, help="keep the processes' logs in this folder")
    arguments = parser.parse_args()
    if arguments.logs:
        arguments.logs.mkdir(parents=True, exist_ok=True)
    report = run(arguments.duration, arguments.seed, arguments.logs)
    text = summary(report)
    print(text)
    if arguments.report:
        arguments.report.write_text(text + "\n")
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
