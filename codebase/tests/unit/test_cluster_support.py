"""The cluster suite's own yardsticks (tests/cluster/cluster.py), checked without an engine:
a wrong oracle there would pass a wrong cluster."""

from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.cluster.cluster import all_exactly_once, ceil_to_satoshi, docker_time, dotenv


def test_ceil_to_satoshi_rounds_the_exact_quotient_up_and_leaves_an_exact_one_alone() -> None:
    assert ceil_to_satoshi("123.45", "97012.34") == Decimal("0.00127252")  # the README's example
    assert ceil_to_satoshi("0.01", "91234.5678") == Decimal("0.00000011")  # 10.96 satoshis
    assert ceil_to_satoshi("1.00", "1000000") == Decimal("0.00000100")  # exact: not one more
    assert ceil_to_satoshi("999999999.99", "1000000") == Decimal("999.99999999")


def test_docker_times_with_nanoseconds_and_without_a_fraction_parse() -> None:
    assert docker_time("2026-12-01T09:02:49.994223289Z").isoformat() == "2026-12-01T09:02:49.994223+00:00"
    assert docker_time("2026-12-01T09:02:49Z").isoformat() == "2026-12-01T09:02:49+00:00"
    assert docker_time("2026-12-01T09:02:49.5+01:00") < docker_time("2026-12-01T09:02:49Z")


def test_dotenv_reads_values_as_compose_does(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("A=1\n# B=2\nC=\"a # b\"\nD=plain # a comment\nE='q'\n  F = spaced  \n")
    assert dotenv(env) == {"A": "1", "C": "a # b", "D": "plain", "E": "q", "F": "spaced"}


def order(n: int, **changes: str) -> dict[str, Any]:
    return {"id": f"id-{n}", "amount": f"{n}.00", **changes}


def test_all_exactly_once_names_what_is_duplicated_missing_or_changed() -> None:
    created = {o["id"]: o for o in (order(1), order(2))}
    assert all_exactly_once([order(3), order(2), order(1)], created) is None
    assert "more than once" in str(all_exactly_once([order(2), order(1), order(1)], created))
    assert "1 of 2 orders not (yet)" in str(all_exactly_once([order(3), order(2)], created))
    assert "differ from their 201" in str(all_exactly_once([order(2), order(1, amount="9.99")], created))
