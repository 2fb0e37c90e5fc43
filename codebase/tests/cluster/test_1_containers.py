"""How the cluster ./run.sh started looks from the engine: the migration ran first and
succeeded, the app runs unprivileged, only the gateway is reachable from outside, and every
healthcheck passes. First in the run: later modules restart and rescale containers."""

import json
from typing import Any

from tests.cluster.cluster import (
    AFTER_MIGRATION,
    APP_SERVICES,
    APP_UID,
    LONG_RUNNING_APP_SERVICES,
    containers,
    docker,
    of_service,
    setting,
    wait_for,
)
from tests.cluster.session import Cluster

# The services whose compose definition or image declares a healthcheck.
HEALTHCHECKED = ("write_model", "read_model", "queue", "log", *("btc_price", "create_buy_order", "fetch_buy_orders"))


def test_the_migration_container_exited_0_before_the_services_that_need_it_started(cluster: Cluster) -> None:
    everything = containers(cluster.env)
    migrations = of_service(everything, "migration")
    assert len(migrations) == 1, [c.name for c in migrations]
    migration = migrations[0]
    assert migration.state["Status"] == "exited", migration.state
    assert migration.state["ExitCode"] == 0, docker("logs", "--tail", "50", migration.id)
    finished = migration.finished_at()
    for service in AFTER_MIGRATION:
        started = of_service(everything, service)
        assert started, f"no {service} container"
        for container in started:
            assert container.started_at() > finished, (
                f"{container.name} started at {container.started_at()}, before the migration finished at {finished}"
            )
    # It migrated both databases (its structured log lines on stdout).
    output = docker("logs", migration.id)
    migrated = {event.get("database") for event in json_lines(output) if event.get("event") == "migrated"}
    assert migrated == {"write_model", "read_model"}, output[-2000:]


def json_lines(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def test_every_app_container_runs_as_uid_10001(cluster: Cluster) -> None:
    everything = containers(cluster.env)
    for service in APP_SERVICES:
        for container in of_service(everything, service):
            assert container.raw["Config"]["User"].split(":")[0] == APP_UID, (container.name, container.raw["Config"])
    for service in LONG_RUNNING_APP_SERVICES:
        running = [c for c in of_service(everything, service) if c.running]
        assert running, f"no running {service} container"
        for container in running:
            assert docker("exec", container.id, "id", "-u").strip() == APP_UID, container.name


def test_only_the_gateway_publishes_ports_the_two_api_ports_on_the_address_env_names(cluster: Cluster) -> None:
    everything = containers(cluster.env)
    published = {
        container.name: {
            port: bindings for port, bindings in (container.raw["NetworkSettings"]["Ports"] or {}).items() if bindings
        }
        for container in everything
        if container.running
    }
    publishing = {name for name, ports in published.items() if ports}
    gateways = [c.name for c in of_service(everything, "gateway")]
    assert publishing == set(gateways), f"containers publishing ports: {publishing}"
    # Nor would any other container publish one when (re)started: the migration included.
    configured = {c.name for c in everything if c.raw["HostConfig"].get("PortBindings")}
    assert configured == set(gateways), f"containers set up to publish ports: {configured}"
    assert all(not c.raw["HostConfig"].get("PublishAllPorts") for c in everything)

    # On the ports and the address .env names (PUBLISH_ADDRESS: 127.0.0.1, this machine only).
    address = setting("PUBLISH_ADDRESS", "127.0.0.1")
    wanted = {(address, setting("CREATE_BUY_ORDER_PORT", "8777")), (address, setting("FETCH_BUY_ORDERS_PORT", "8778"))}
    for gateway in gateways:
        bound = {(b["HostIp"], b["HostPort"]) for bindings in published[gateway].values() for b in bindings}
        assert bound == wanted, published[gateway]


def test_every_healthcheck_reaches_healthy(cluster: Cluster) -> None:
    def all_healthy() -> bool:
        everything = containers(cluster.env)
        running = [c for c in everything if c.running]
        unhealthy = {c.name: c.health for c in running if c.health is not None and c.health != "healthy"}
        assert not unhealthy, f"not healthy yet: {unhealthy}"
        checked = {c.service for c in running if c.health is not None}
        assert set(HEALTHCHECKED) <= checked, f"no healthcheck on {set(HEALTHCHECKED) - checked}"
        stopped = {c.name: c.state["Status"] for c in everything if not c.running and c.service != "migration"}
        assert not stopped, f"not running: {stopped}"
        return True

    wait_for("every container with a healthcheck to be healthy", all_healthy, 120)
