"""The HA cluster as docker-compose.ha.yml describes it, before any fault: one primary with a
synchronous standby, three RabbitMQ nodes holding the quorum queues, the services on the
multi-host URL and the broker list, their URLs masked in what they print, `Prefer: wait` working."""

import time

from tests.cluster.cluster import containers, of_service, run, wait_for
from tests.cluster.session import Cluster
from tests.ha.ha import (
    DEAD_LETTER_QUEUE,
    PG_NODES,
    QUEUE,
    RABBIT_NODES,
    patroni_members,
    prefer_wait_within_bound,
    primaries,
    queues,
    report,
)


def test_write_model_has_one_primary_and_a_synchronous_standby(cluster: Cluster) -> None:
    def roles() -> dict[str, str]:
        members = patroni_members(cluster)
        found = {name: f"{m['role']}/{m['state']}" for name, m in members.items()}
        assert sorted(found) == sorted(PG_NODES), found
        values = sorted(found.values())
        assert values.count("leader/running") == 1, found
        assert values.count("sync_standby/streaming") == 1, found
        assert values.count("replica/streaming") == 1, found
        return found

    found = wait_for("Patroni to show a leader, a synchronous standby and a replica", roles, 90)
    leader = next(name for name, role in found.items() if role.startswith("leader"))
    assert primaries(cluster) == [leader], "exactly one node takes writes, the leader"


def test_quorum_queues_have_a_member_on_each_of_the_three_nodes(cluster: Cluster) -> None:
    nodes = sorted(f"rabbit@{name}" for name in RABBIT_NODES)

    def replicated() -> bool:
        seen = queues(cluster, "rabbit1")
        for queue in (QUEUE, DEAD_LETTER_QUEUE):
            assert queue in seen, f"{queue} is not declared (queues: {sorted(seen)})"
            assert sorted(seen[queue]["members"]) == nodes, f"{queue}: members {seen[queue]['members']}"
        return True

    wait_for("both quorum queues to have a member on rabbit1, rabbit2 and rabbit3", replicated, 90, interval=3)


def test_services_use_the_multi_host_url_and_the_broker_list_and_mask_them(cluster: Cluster) -> None:
    everything = containers(cluster.env)
    for service in ("create_buy_order", "outbox_relay", "read_model_sync"):
        running = [c for c in of_service(everything, service) if c.running]
        assert len(running) == 2, f"{service}: {len(running)} replicas running, 2 wanted"
    for container in of_service(everything, "create_buy_order") + of_service(everything, "outbox_relay"):
        url = container.env["WRITE_MODEL_DB_URL"]
        assert "pg1:5432,pg2:5432,pg3:5432" in url and "target_session_attrs=read-write" in url, url
    for container in of_service(everything, "outbox_relay") + of_service(everything, "read_model_sync"):
        brokers = container.env["AMQP_URL"].split(";")
        assert [b.split("@")[1].split(":")[0] for b in brokers] == list(RABBIT_NODES), brokers
        printed = run(["docker", "logs", container.id], check=False)
        text = printed.stdout + printed.stderr
        assert "guest:guest@" not in text and "btc:btc@" not in text, f"{container.name} printed a password"


def test_prefer_wait_answers_within_its_bound(cluster: Cluster) -> None:
    started = time.monotonic()
    took = prefer_wait_within_bound(cluster)
    report(
        "topology", {"prefer_wait_seconds": round(took, 3), "checked_in_seconds": round(time.monotonic() - started, 1)}
    )
