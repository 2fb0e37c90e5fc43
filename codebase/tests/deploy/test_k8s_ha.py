"""The HA overlay (deploy/k8s/overlays/ha): the suite attached to a replicated write model by
libpq's multi-host URL and to a RabbitMQ cluster by a broker list, rendered by the pinned
kustomize and read back the way the processes read it (db.conninfo, urls.elements)."""

import base64
import subprocess

import yaml
from psycopg.conninfo import conninfo_to_dict

from btc_orders import settings, urls
from btc_orders.adapters import db
from tests.deploy.conftest import K8S, Object, containers, kubectl, workloads

HA = K8S / "overlays" / "ha"


def rendered() -> tuple[Object, ...]:
    result = subprocess.run([kubectl(), "kustomize", str(HA)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"kustomize could not render the HA overlay:\n{result.stderr}"
    return tuple(document for document in yaml.safe_load_all(result.stdout) if document)


def secret_value(objects: tuple[Object, ...], prefix: str, key: str) -> str:
    found = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, f"expected one Secret {prefix}-*, found {[o['metadata']['name'] for o in found]}"
    return base64.b64decode(found[0]["data"][key]).decode()


def test_the_write_model_url_names_every_node_and_asks_for_the_primary() -> None:
    url = secret_value(rendered(), "write-model-credentials", "WRITE_MODEL_DB_URL")
    parameters = conninfo_to_dict(db.conninfo(url))
    assert len(str(parameters["host"]).split(",")) == 3, parameters
    assert str(parameters["port"]).split(",") == ["5432"] * 3, parameters
    assert parameters["target_session_attrs"] == "read-write"
    assert "CHANGE-ME" not in urls.mask(url), "the password is masked when printed"


def test_the_broker_url_is_a_list_of_the_three_nodes() -> None:
    url = secret_value(rendered(), "broker-credentials", "AMQP_URL")
    brokers = urls.elements(url)
    assert len(brokers) == 3 and len(set(brokers)) == 3, brokers
    assert settings._amqp_url(url) == url  # accepted as the settings accept it
    assert "CHANGE-ME" not in urls.mask(url)


def test_the_processes_that_use_them_take_them_from_the_rendered_secrets() -> None:
    objects = rendered()
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    seen: dict[str, set[str]] = {"WRITE_MODEL_DB_URL": set(), "AMQP_URL": set()}
    for name, workload in workloads(objects).items():
        for container in containers(workload):
            for source in container.get("envFrom", []):
                reference = source.get("secretRef", {}).get("name")
                if reference is None:
                    continue
                assert reference in secrets, f"{name} takes its environment from {reference}, which is not rendered"
                for key in seen.keys() & secrets[reference]["data"].keys():
                    seen[key].add(name)
    assert {"create-buy-order", "outbox-relay", "migration"} <= seen["WRITE_MODEL_DB_URL"], seen
    assert {"outbox-relay", "read-model-sync"} <= seen["AMQP_URL"], seen
