"""docker-compose.ha.yml as Docker Compose v2 resolves it over docker-compose.yml (no engine asked):
the HA cluster's nodes, the single-node databases and broker left out, the services on the
multi-host URL and the broker list with two replicas each. The HA stage (scripts/ha_stage.sh)
runs it for real; this catches a broken override anywhere compose runs."""

from typing import Any

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from btc_orders import urls
from btc_orders.adapters import db
from tests.containers.conftest import REPO, compose_env, run, tool

HA_NODES = ("etcd", "pg1", "pg2", "pg3", "rabbit1", "rabbit2", "rabbit3")


@pytest.fixture(scope="module")
def ha_config() -> dict[str, Any]:
    result = run(
        tool("docker-compose"),
        "--project-directory",
        str(REPO),
        "--file",
        str(REPO / "docker-compose.yml"),
        "--file",
        str(REPO / "docker-compose.ha.yml"),
        "config",
        env=compose_env(),
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_the_ha_nodes_replace_the_single_node_write_model_and_queue(ha_config: dict[str, Any]) -> None:
    services = ha_config["services"]
    assert set(HA_NODES) <= set(services), sorted(services)
    assert "write_model" not in services and "queue" not in services, "started by the HA cluster"
    for service in services.values():
        assert not {"write_model", "queue"} & set(service.get("depends_on") or {}), service.get("depends_on")


def test_the_services_use_the_multi_host_url_and_the_broker_list(ha_config: dict[str, Any]) -> None:
    services = ha_config["services"]
    for name in ("migration", "create_buy_order", "outbox_relay"):
        url = services[name]["environment"]["WRITE_MODEL_DB_URL"]
        parameters = conninfo_to_dict(db.conninfo(url))
        assert str(parameters["host"]).split(",") == ["pg1", "pg2", "pg3"], (name, url)
        assert parameters["target_session_attrs"] == "read-write", (name, url)
    for name in ("outbox_relay", "read_model_sync"):
        brokers = urls.elements(services[name]["environment"]["AMQP_URL"])
        assert [b.split("@")[1].split(":")[0] for b in brokers] == ["rabbit1", "rabbit2", "rabbit3"], (name, brokers)


def test_create_buy_order_and_both_workers_run_two_replicas(ha_config: dict[str, Any]) -> None:
    for name in ("create_buy_order", "outbox_relay", "read_model_sync"):
        assert ha_config["services"][name]["deploy"]["replicas"] == 2, name


def test_the_rabbitmq_nodes_share_one_cookie_and_the_cluster_configuration(ha_config: dict[str, Any]) -> None:
    nodes = [ha_config["services"][f"rabbit{n}"] for n in (1, 2, 3)]
    assert len({node["environment"]["RABBITMQ_CLUSTER_COOKIE"] for node in nodes}) == 1
    for number, node in enumerate(nodes, start=1):
        assert node["hostname"] == f"rabbit{number}"  # the node name rabbit@rabbitN of the cluster config
        targets = {volume["target"] for volume in node["volumes"]}
        assert "/etc/rabbitmq/conf.d/20-cluster.conf" in targets, targets
