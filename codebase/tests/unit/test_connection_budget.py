"""How an HTTP worker splits its `DB_POOL_SIZE` connections between its event loop and its threads."""

import pytest

from btc_orders.adapters.db_loop import connections_on_loop


@pytest.mark.parametrize(("pool_size", "on_loop"), [(1, 0), (2, 1), (4, 3), (5, 4), (20, 15), (200, 150)])
def test_most_connections_serve_the_loop_and_at_least_one_serves_the_threads(pool_size: int, on_loop: int) -> None:
    assert connections_on_loop(pool_size) == on_loop
    assert pool_size - connections_on_loop(pool_size) >= 1  # the slow path, lookups, a rate to fetch
