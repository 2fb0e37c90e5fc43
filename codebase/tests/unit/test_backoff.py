"""Reconnect backoff: bounded, growing, and jittered so that replicas do not retry in lockstep."""

import random

import pytest

from btc_orders.services.worker import Backoff


def test_every_delay_is_within_a_window_that_doubles_up_to_the_ceiling() -> None:
    backoff = Backoff(first=0.2, ceiling=2.0, rng=random.Random(1))
    windows = []
    for _ in range(12):
        window = backoff.window()
        windows.append(window)
        assert 0 <= backoff.delay() <= window
    assert windows[:5] == [0.2, 0.4, 0.8, 1.6, 2.0]
    assert set(windows[4:]) == {2.0}


def test_the_window_grows_with_attempts_and_reset_starts_over() -> None:
    backoff = Backoff(first=0.1, ceiling=5.0, rng=random.Random(2))
    early = [backoff.delay() for _ in range(200)]
    assert max(early[:3]) <= 0.4
    late = [backoff.delay() for _ in range(2000)]
    assert max(late) <= 5.0
    assert sum(late) / len(late) > 2.0  # uniform over [0, 5]: mean about 2.5
    backoff.reset()
    assert backoff.window() == 0.1 and backoff.delay() <= 0.1


def test_replicas_retrying_after_the_same_outage_draw_different_delays() -> None:
    replicas = [Backoff(rng=random.Random(seed)) for seed in range(20)]
    for _ in range(5):
        delays = [replica.delay() for replica in replicas]
        assert len(set(delays)) == len(delays), "every replica waits a different time"
    again = [Backoff(rng=random.Random(seed)) for seed in range(20)]
    assert [b.delay() for b in again] == [b.delay() for b in [Backoff(rng=random.Random(s)) for s in range(20)]]


def test_many_attempts_do_not_overflow() -> None:
    backoff = Backoff(rng=random.Random(3))
    for _ in range(10_000):
        assert 0 <= backoff.delay() <= 2.0


def test_nonsense_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(first=0, ceiling=1)
    with pytest.raises(ValueError):
        Backoff(first=3, ceiling=1)
