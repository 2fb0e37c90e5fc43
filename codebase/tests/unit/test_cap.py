"""The cap ledger's arithmetic: spreading capacity over slots."""

from hypothesis import given
from hypothesis import strategies as st

from btc_orders.domain import cap


@given(st.integers(min_value=0, max_value=10**16), st.integers(min_value=1, max_value=256))
def test_spread_keeps_the_total_and_is_even(total: int, slots: int) -> None:
    parts = cap.spread(total, slots)
    assert len(parts) == slots
    assert sum(parts) == total
    assert min(parts) >= 0
    assert max(parts) - min(parts) <= 1


def test_remaining_is_cap_minus_used_and_never_negative() -> None:
    assert cap.remaining(100, 30) == 70
    assert cap.remaining(100, 100) == 0
    assert cap.remaining(50, 80) == 0
