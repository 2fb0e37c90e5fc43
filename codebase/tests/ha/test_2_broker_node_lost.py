"""A RabbitMQ node lost in the middle of a burst: the node that leads the `read_model_sync` quorum
queue is killed (SIGKILL of its container) while 1,200 orders are placed, and started again later.
The relay and the worker move to another broker of AMQP_URL; every order is projected exactly
once, nothing is dead-lettered, and the longest time the projection made no progress is measured."""

import time

import pytest

from tests.cluster.cluster import converge, wait_for
from tests.cluster.session import Cluster
from tests.ha.ha import (
    DEAD_LETTER_QUEUE,
    QUEUE,
    RABBIT_NODES,
    PacedBurst,
    Progress,
    histogram,
    kill,
    node,
    prefer_wait_within_bound,
    queues,
    read_model_count,
    report,
    start,
)

ORDERS = 1_200
KILL_AFTER = 400  # answers before the kill
DOWN_SECONDS = 15  # how long the node stays dead


@pytest.mark.timeout(600)
def test_queue_leader_lost_projects_every_order_exactly_once(cluster: Cluster) -> None:
    prefer_wait_within_bound(cluster)
    seen = queues(cluster, "rabbit1")
    leader_service = seen[QUEUE]["leader"].split("@")[1]
    assert leader_service in RABBIT_NODES, seen[QUEUE]
    survivor = next(name for name in RABBIT_NODES if name != leader_service)
    baseline = read_model_count(cluster)
    progress = Progress(cluster).start()
    burst = PacedBurst(cluster.api, ORDERS).start()
    try:
        wait_for(f"{KILL_AFTER} answers", lambda: burst.answered >= KILL_AFTER, 120, interval=0.05)
        victim = node(cluster, leader_service)
        killed_at = kill(victim)
        wait_for("the node's time down", lambda: time.monotonic() >= killed_at + DOWN_SECONDS, DOWN_SECONDS + 5)
        new_leader = queues(cluster, survivor)[QUEUE]["leader"]
        start(victim)
        restarted_at = time.monotonic()
        burst.join(300)
        created = burst.created()
        converge(cluster.api, created, seconds=180)
        projected_at = time.monotonic()
    finally:
        progress.stop()
    statuses = histogram(burst.answers)
    assert statuses == {"201": ORDERS}, f"orders need no broker: every one is a 201, got {statuses}"

    def back_and_drained() -> bool:
        now_seen = queues(cluster, survivor)
        assert sorted(now_seen[QUEUE]["members"]) == sorted(f"rabbit@{n}" for n in RABBIT_NODES), now_seen[QUEUE]
        assert now_seen[QUEUE]["messages"] == 0, f"{now_seen[QUEUE]['messages']} messages left in {QUEUE}"
        assert now_seen[DEAD_LETTER_QUEUE]["messages"] == 0, f"{now_seen[DEAD_LETTER_QUEUE]['messages']} dead letters"
        return True

    wait_for(
        "the restarted node back in the queue, nothing left in it, no dead letter", back_and_drained, 120, interval=3
    )
    stall = progress.longest_stall([a.sent + a.seconds for a in burst.answers if a.status == 201], baseline)
    samples = len(progress.samples)
    # The figure is measured, not assumed: the sampler saw the whole run, a sample at least every 2 s.
    assert samples >= (projected_at - killed_at) / 2, f"{samples} samples of the read model in the run"
    to_next_projection = progress.next_growth_after(killed_at)
    assert to_next_projection is not None, "the read model did not grow after the kill"
    prefer_wait_within_bound(cluster)
    report(
        "broker_node_lost",
        {
            "orders": ORDERS,
            "answers_by_status": statuses,
            "killed": leader_service,
            "new_queue_leader": new_leader,
            "longest_seconds_without_progress": round(stall, 1),
            "seconds_from_kill_to_next_projection": round(to_next_projection, 1),
            "read_model_samples": samples,
            "seconds_from_kill_to_all_projected": round(projected_at - killed_at, 1),
            "seconds_from_restart_to_all_projected": round(max(0.0, projected_at - restarted_at), 1),
            "dead_letters": 0,
        },
    )
