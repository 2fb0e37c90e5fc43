"""The outbox relay and the read-model worker killed (SIGKILL, no goodbye) in the middle of a
burst of orders: the restart policy (unless-stopped) brings both back, and every order
created reaches the read model exactly once.

The kill comes from inside the container, as an OOM kill or a crash would: `docker kill`
counts as stopping the container by hand, and Docker restarts no container stopped by hand
(whatever its restart policy), so after `docker kill` the relay would stay down.
"""

import random

import pytest

from tests.cluster.cluster import Burst, Container, containers, converge, of_service, run, wait_for
from tests.cluster.session import Cluster

BEFORE_KILL = 40  # orders answered before the kills
AFTER_KILL = 150  # orders answered after them, before the burst stops
MOST = 2_000  # the burst stops here whatever happens (at most 0.001 BTC an order)


def the_running(cluster: Cluster, service: str) -> Container:
    running = [c for c in of_service(containers(cluster.env), service) if c.running]
    assert len(running) == 1, f"expected one running {service} (scale 1), found {[c.name for c in running]}"
    return running[0]


@pytest.mark.timeout(900)
def crash(container: Container) -> None:
    """SIGKILL every process of the container but its init (tini, which then exits 137)."""
    run(["docker", "exec", container.id, "sh", "-c", "kill -KILL -1"], check=False)


def test_killed_relay_and_worker_are_restarted_and_no_order_is_lost_or_duplicated(cluster: Cluster) -> None:
    relay = the_running(cluster, "outbox_relay")
    worker = the_running(cluster, "read_model_sync")
    amounts = random.Random(12)
    issued = 0

    def next_order() -> tuple[str, str] | None:
        nonlocal issued
        if issued >= MOST:
            return None
        issued += 1
        return "USD", f"{amounts.randint(100, 9999) / 100:.2f}"

    burst = Burst(cluster.api, next_order, threads=16).start()
    try:
        wait_for(f"{BEFORE_KILL} orders to be answered", lambda: burst.answered >= BEFORE_KILL, 60, interval=0.05)
        crash(relay)
        crash(worker)
        at_kill = burst.answered
        wait_for(
            f"{AFTER_KILL} more orders to be answered after the kills",
            lambda: burst.answered >= at_kill + AFTER_KILL or issued >= MOST,
            120,
            interval=0.1,
        )
    finally:
        burst.stop()
        burst.join()

    assert not burst.errors, burst.errors[:5]
    assert burst.statuses() == {201: len(burst.answers)}, burst.statuses()
    assert at_kill < len(burst.answers), "the kills came after the burst"

    def restarted(before: Container) -> bool:
        [now] = [c for c in containers(cluster.env) if c.id == before.id]
        assert now.raw["RestartCount"] > before.raw["RestartCount"], f"{before.name} was not restarted yet"
        assert now.running, f"{before.name} is {now.state['Status']}"
        return True

    wait_for("the killed relay to be restarted by its restart policy", lambda: restarted(relay), 60)
    wait_for("the killed worker to be restarted by its restart policy", lambda: restarted(worker), 60)

    converge(cluster.api, burst.created())
