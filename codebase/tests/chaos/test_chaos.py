"""A short chaos run in the suite: every fault kind once, a fixed seed, every invariant checked.

The blackholes (20 s each) are left to the long run (`scripts/chaos.sh`), to keep this one quick.
"""

from pathlib import Path

from tests.chaos.faults import BLACKHOLES
from tests.chaos.harness import run, summary


def test_a_minute_of_faults_loses_duplicates_and_breaks_nothing(tmp_path: Path) -> None:
    report = run(duration=60, seed=11, directory=tmp_path, left_out=frozenset(BLACKHOLES))
    assert report["problems"] == [], summary(report)
    assert all(count >= 1 for count in report["fault_counts"].values()), report["fault_counts"]
    assert report["acknowledged"] > 0 and report["lost"] == report["duplicated"] == report["cap_breaches"] == 0
