"""A suite configured with a multi-host URL whose first host refuses, and a broker list whose first
broker refuses, places and projects orders: create_buy_order and both workers are recreated with
`etcd` (a host of the network with nothing on 5432 or 5672: connection refused) put first in
HA_WRITE_MODEL_DB_URL and HA_AMQP_URL, then orders are placed through the gateway and read back."""

import pytest

from tests.cluster.cluster import compose, containers, converge, of_service, wait_for
from tests.cluster.session import Cluster, wait_ready
from tests.ha.ha import prefer_wait_within_bound, report

WRITE_URL = (
    "postgresql://btc:btc@etcd:5432,pg1:5432,pg2:5432,pg3:5432/write_model"
    "?target_session_attrs=read-write&connect_timeout=2"
)
BROKERS = ";".join(f"amqp://guest:guest@{host}:5672/%2F" for host in ("etcd", "rabbit1", "rabbit2", "rabbit3"))
SERVICES = ("create_buy_order", "outbox_relay", "read_model_sync")
ORDERS = 50


@pytest.mark.timeout(400)
def test_first_host_and_first_broker_refusing_still_place_and_project_orders(cluster: Cluster) -> None:
    env = {**cluster.env, "HA_WRITE_MODEL_DB_URL": WRITE_URL, "HA_AMQP_URL": BROKERS}
    compose("up", "--detach", "--no-deps", "--wait", *SERVICES, env=env, timeout=300)
    everything = containers(env)
    for service in SERVICES:
        running = [c for c in of_service(everything, service) if c.running]
        assert len(running) == 2, f"{service}: {len(running)} replicas running"
        for container in running:
            if service != "read_model_sync":
                assert container.env["WRITE_MODEL_DB_URL"] == WRITE_URL
            if service != "create_buy_order":
                assert container.env["AMQP_URL"] == BROKERS
    wait_ready(cluster.api)
    created = {}
    for number in range(ORDERS):

        def placed(number: int = number) -> dict[str, object] | None:
            response = cluster.api.put_order("USD", f"{10 + number}.00")
            assert response.status_code in (201, 503), f"{response.status_code} {response.text}"
            return response.json() if response.status_code == 201 else None

        order = wait_for("an order to be placed", placed, 30, interval=0.5)
        created[order["id"]] = order
    converge(cluster.api, created, seconds=120)
    prefer_wait_within_bound(cluster)
    report("first_host_refuses", {"orders_placed_and_projected": len(created), "write_url_hosts": 4, "brokers": 4})
