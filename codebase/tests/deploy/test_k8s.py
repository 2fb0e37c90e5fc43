"""The Kubernetes manifests (deploy/k8s): rendered by a real kustomize, valid for Kubernetes, sound.

Both the base and the example overlay are rendered with the kustomize built into the pinned
kubectl; every object is validated against the Kubernetes JSON schemas that
kubernetes-validate ships (strict: unknown fields are errors) for the oldest Kubernetes version
the manifests support and the newest one the schemas cover. Then what schemas cannot say:
probes, resources, the security context, selectors that select, references that resolve.
"""

import base64
import json
import re
import subprocess
from decimal import Decimal
from urllib.parse import urlsplit

import kubernetes_validate
import pytest

from tests.deploy.conftest import (
    K8S,
    REPO,
    Object,
    containers,
    dotenv,
    env_of,
    kubectl,
    of_kind,
    one_of_kind,
    pod_spec,
    render,
    workloads,
)

# The oldest Kubernetes the manifests are for (autoscaling/v2, policy/v1, Job TTL, seccompProfile
# and Pod Security Admission are all GA there) and the newest that the pinned schemas cover.
KUBERNETES_VERSIONS = ("1.30", "1.37")

HTTP = {"create-buy-order": 8777, "fetch-buy-orders": 8778, "btc-price": 8779}
PORT_VARIABLE = {
    "create-buy-order": "CREATE_BUY_ORDER_PORT",
    "fetch-buy-orders": "FETCH_BUY_ORDERS_PORT",
    "btc-price": "BTC_PRICE_PORT",
}
PUBLIC_APIS = {"create-buy-order", "fetch-buy-orders"}
WORKERS = {"outbox-relay": "outbox_relay", "read-model-sync": "read_model_sync"}
JOBS = {"migration"}
# The admin CLI's pod: zero replicas, scaled up for a session (deploy/k8s/base/admin.yaml); it
# serves nothing, so it has no Service, metrics or disruption budget.
ADMIN = "admin"
# Kubernetes object name -> the package's service name (and its image btc-orders/<service>).
SERVICE_OF = {
    "create-buy-order": "create_buy_order",
    "fetch-buy-orders": "fetch_buy_orders",
    "btc-price": "btc_price",
    **WORKERS,
    "migration": "migration",
}
IMAGE_OF = {**SERVICE_OF, ADMIN: "migration"}  # the admin CLI runs from the one-off processes' image
# One Secret per backing service, each holding that service's URL.
SECRETS = {
    "write-model-credentials": "WRITE_MODEL_DB_URL",
    "read-model-credentials": "READ_MODEL_DB_URL",
    "broker-credentials": "AMQP_URL",
}
SECRET_KEYS = set(SECRETS.values())
CONFIG_MAP = "btc-orders-config"
# Where the base's ConfigMap differs from .env on purpose (deploy/k8s/base/config.env says why).
K8S_DIFFERENCES = {"BTC_PRICE_URL", "FLUENTD_HOST"}
METRICS_PORT = 9100
UID = 10001


def generated(objects: tuple[Object, ...], kind: str, name: str) -> Object:
    """A generated ConfigMap or Secret: its name is the generator's plus a content hash."""
    found = [o for o in objects if o["kind"] == kind and re.fullmatch(rf"{name}-[a-z0-9]{{10}}", o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name}-<hash>, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def config_map(objects: tuple[Object, ...]) -> dict[str, str]:
    data: dict[str, str] = generated(objects, "ConfigMap", CONFIG_MAP)["data"]
    return data


def secret(objects: tuple[Object, ...], name: str) -> dict[str, str]:
    data = generated(objects, "Secret", name)["data"]
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def container_of(workload: Object) -> Object:
    main = pod_spec(workload)["containers"]
    assert len(main) == 1, f"{workload['metadata']['name']}: one container per pod expected"
    container: Object = main[0]
    return container


def named_port(container: Object, port: int | str) -> int:
    """A probe's or Service's port (a number or a container port's name) as a number."""
    ports: dict[str, int] = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if isinstance(port, str):
        assert port in ports, f"{container['name']}: no container port named {port!r} ({ports})"
        return ports[port]
    assert port in ports.values(), f"{container['name']}: port {port} is not a container port ({ports})"
    return port


def quantity(value: str | int) -> Decimal:
    """A Kubernetes resource quantity (the suffixes these manifests use) as a number."""
    text = str(value)
    suffixes = {"m": Decimal("0.001"), "Ki": Decimal(1024), "Mi": Decimal(1024**2), "Gi": Decimal(1024**3)}
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) * factor
    return Decimal(text)


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- The tools and the schemas -----------------------------------------------------------------


def test_kustomize_is_a_real_kustomize_v5() -> None:
    result = subprocess.run(
        [kubectl(), "version", "--client", "-o", "json"], capture_output=True, text=True, check=True
    )
    versions = json.loads(result.stdout)
    assert versions["kustomizeVersion"].startswith("v5."), versions


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_is_valid_for_kubernetes(rendered: tuple[Object, ...], version: str) -> None:
    problems = []
    for obj in rendered:
        what = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            problems.append(f"{what}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{what}: no schema ({error.message}): an unknown kind or apiVersion")
    assert not problems, f"invalid for Kubernetes {version}:\n" + "\n".join(problems)


def test_the_schemas_are_strict_enough_to_catch_a_typo() -> None:
    """The check above is worth something: a misspelt field fails it."""
    deployment = json.loads(json.dumps(of_kind(render("base"), "Deployment")["create-buy-order"]))
    container_of(deployment)["readinesProbe"] = container_of(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_what_is_rendered(rendered: tuple[Object, ...]) -> None:
    kinds: dict[str, set[str]] = {}
    for obj in rendered:
        kinds.setdefault(obj["kind"], set()).add(obj["metadata"]["name"])
    assert kinds["Deployment"] == {*HTTP, *WORKERS, ADMIN}
    assert kinds["Job"] == JOBS
    assert kinds["Service"] == set(HTTP)
    assert kinds["HorizontalPodAutoscaler"] == PUBLIC_APIS
    assert kinds["PodDisruptionBudget"] == {*HTTP, *WORKERS}
    generated(rendered, "ConfigMap", CONFIG_MAP)
    for name in SECRETS:
        generated(rendered, "Secret", name)
    assert len(kinds["Secret"]) == len(SECRETS)
    assert set(kinds) <= {"Namespace", "ConfigMap", "Secret", "Service", "Deployment", "Job"} | {
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }, "no Postgres or RabbitMQ here: they are backing services attached by URL"


# --- Pods: locked down, sized, probed ----------------------------------------------------------


def test_every_pod_runs_as_non_root_with_a_read_only_root(rendered: tuple[Object, ...]) -> None:
    for name, workload in workloads(rendered).items():
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == UID, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec.get("automountServiceAccountToken") is False, f"{name}: no process talks to the API server"
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in containers(workload):
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, where
            assert context["runAsUser"] == UID, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert not context["capabilities"].get("add"), where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert "privileged" not in context or context["privileged"] is False, where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: a read-only root needs a writable /tmp"
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp must be an emptyDir"


def test_every_container_has_resource_requests_and_limits(rendered: tuple[Object, ...]) -> None:
    for name, workload in workloads(rendered).items():
        for container in containers(workload):
            resources = container["resources"]
            for resource in ("cpu", "memory"):
                request = quantity(resources["requests"][resource])
                limit = quantity(resources["limits"][resource])
                assert 0 < request <= limit, f"{name}: {resource} request {request} above limit {limit}"


def test_http_services_have_startup_liveness_and_readiness_probes(rendered: tuple[Object, ...]) -> None:
    deployments = of_kind(rendered, "Deployment")
    for name, port in HTTP.items():
        container = container_of(deployments[name])
        assert named_port(container, "http") == port
        expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
        for probe, path in expected.items():
            http_get = container[probe]["httpGet"]
            assert http_get["path"] == path, f"{name}: {probe}"
            assert named_port(container, http_get["port"]) == port, f"{name}: {probe} port"
        assert "command" not in container, f"{name}: the image's CMD (gunicorn) runs it"


def test_workers_have_a_liveness_probe_on_their_metrics_port(rendered: tuple[Object, ...]) -> None:
    deployments = of_kind(rendered, "Deployment")
    for name in WORKERS:
        container = container_of(deployments[name])
        probe = container["livenessProbe"]["httpGet"]
        assert probe["path"] == "/metrics"
        assert named_port(container, probe["port"]) == METRICS_PORT


def test_the_readiness_probe_of_btc_price_outlasts_a_slow_coinbase(rendered: tuple[Object, ...]) -> None:
    container = container_of(of_kind(rendered, "Deployment")["btc-price"])
    timeout = Decimal(config_map(rendered)["COINBASE_TIMEOUT_SECONDS"])
    assert container["readinessProbe"]["timeoutSeconds"] > timeout


def test_btc_price_runs_one_gunicorn_worker_in_one_pod(rendered: tuple[Object, ...]) -> None:
    deployment = of_kind(rendered, "Deployment")["btc-price"]
    assert deployment["spec"]["replicas"] == 1, "each btc_price pod makes its own Coinbase calls"
    # A literal, not the ConfigMap's WEB_CONCURRENCY (which sizes the two public APIs).
    assert env_of(container_of(deployment))["WEB_CONCURRENCY"] == "1"
    targets = {hpa["spec"]["scaleTargetRef"]["name"] for hpa in of_kind(rendered, "HorizontalPodAutoscaler").values()}
    assert "btc-price" not in targets
    service = of_kind(rendered, "Service")["btc-price"]
    assert service["spec"]["type"] == "ClusterIP", "btc_price is internal"
    assert service["spec"]["publishNotReadyAddresses"] is True, "a Coinbase outage must not hide btc_price"


def test_http_services_keep_multiprocess_metrics_in_an_empty_dir(rendered: tuple[Object, ...]) -> None:
    deployments = of_kind(rendered, "Deployment")
    for name in HTTP:
        container = container_of(deployments[name])
        directory = env_of(container)["PROMETHEUS_MULTIPROC_DIR"]
        assert directory == "/tmp/prometheus"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert directory in mounts, f"{name}: nothing mounted at {directory}"
        volumes = {v["name"]: v for v in pod_spec(deployments[name])["volumes"]}
        assert "emptyDir" in volumes[mounts[directory]], f"{name}: {directory} must start empty"


def test_prometheus_scrape_annotations_name_a_container_port(rendered: tuple[Object, ...]) -> None:
    for name, deployment in of_kind(rendered, "Deployment").items():
        if name == ADMIN:
            assert "annotations" not in deployment["spec"]["template"]["metadata"], "admin serves nothing"
            continue
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/path"] == "/metrics", name
        port = int(annotations["prometheus.io/port"])
        assert port == HTTP.get(name, METRICS_PORT), name
        named_port(container_of(deployment), port)


def test_graceful_shutdown_fits_in_the_grace_period(rendered: tuple[Object, ...]) -> None:
    gunicorn_graceful_timeout = 20  # docker/gunicorn.conf.py
    for name, deployment in of_kind(rendered, "Deployment").items():
        grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
        pre_stop = 0
        if name in HTTP:
            command = container_of(deployment)["lifecycle"]["preStop"]["exec"]["command"]
            assert command[0] == "sleep", name
            pre_stop = int(command[1])
            assert grace > pre_stop + gunicorn_graceful_timeout, name
        assert grace >= 30, name


# --- Commands, images, workers and the migration -----------------------------------------------


def test_images_are_the_suites_own(rendered: tuple[Object, ...]) -> None:
    overlay = any(obj["kind"] == "Namespace" for obj in rendered)
    for name, workload in workloads(rendered).items():
        image = container_of(workload)["image"]
        if overlay:
            assert image == f"registry.example.com/btc-orders/{IMAGE_OF[name]}:1.0.0", name
        else:
            assert image == f"btc-orders/{IMAGE_OF[name]}:latest", name


def test_workers_run_their_module_with_at_least_two_replicas(rendered: tuple[Object, ...]) -> None:
    deployments = of_kind(rendered, "Deployment")
    for name, service in WORKERS.items():
        deployment = deployments[name]
        assert deployment["spec"]["replicas"] >= 2, f"{name}: two at least, so one survives a drain"
        container = container_of(deployment)
        assert container["command"] == ["python", "-m", f"btc_orders.services.{service}"]
        # each worker reads its own variable (they share a host under ./run.sh --local)
        assert int(env_of(container)[f"{service.upper()}_METRICS_PORT"]) == METRICS_PORT
        assert named_port(container, "metrics") == METRICS_PORT


def test_the_migration_is_a_job_that_ends(rendered: tuple[Object, ...]) -> None:
    job = of_kind(rendered, "Job")["migration"]
    assert 1 <= job["spec"]["backoffLimit"] <= 10
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    assert job["spec"]["activeDeadlineSeconds"] > 0
    assert pod_spec(job)["restartPolicy"] in {"Never", "OnFailure"}
    assert container_of(job)["command"] == ["python", "-m", "btc_orders.services.migration"]


def test_the_commands_exist_in_the_package() -> None:
    services = REPO / "codebase" / "src" / "btc_orders" / "services"
    for service in SERVICE_OF.values():
        assert (services / service / "__main__.py").is_file(), service


# --- Scaling: autoscalers, disruption budgets ------------------------------------------------


def test_autoscalers_target_the_public_apis(rendered: tuple[Object, ...]) -> None:
    deployments = of_kind(rendered, "Deployment")
    for name, hpa in of_kind(rendered, "HorizontalPodAutoscaler").items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment"), name
        assert target["name"] in deployments, f"{name}: targets a Deployment that does not exist"
        assert target["name"] in PUBLIC_APIS, name
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], name
        # A Utilization target is relative to the request: the pods must have one.
        for metric in hpa["spec"]["metrics"]:
            resource = metric["resource"]["name"]
            assert resource in container_of(deployments[target["name"]])["resources"]["requests"], name
        assert "replicas" not in deployments[target["name"]]["spec"], f"{name}: the HPA owns the replica count"


def test_every_deployment_has_a_disruption_budget_that_allows_a_drain(rendered: tuple[Object, ...]) -> None:
    deployments = of_kind(rendered, "Deployment")
    minimum = {
        hpa["spec"]["scaleTargetRef"]["name"]: hpa["spec"]["minReplicas"]
        for hpa in of_kind(rendered, "HorizontalPodAutoscaler").values()
    }
    covered = set()
    for name, pdb in of_kind(rendered, "PodDisruptionBudget").items():
        assert pdb["apiVersion"] == "policy/v1"
        selector = pdb["spec"]["selector"]["matchLabels"]
        selected = [
            d for d, obj in deployments.items() if matches(selector, obj["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(selected) == 1, f"PDB {name} selects {selected}"
        covered.add(selected[0])
        replicas = minimum.get(selected[0], deployments[selected[0]]["spec"].get("replicas", 1))
        assert replicas >= 1, f"PDB {name} guards a Deployment of no pods"
        if "minAvailable" in pdb["spec"]:
            assert int(pdb["spec"]["minAvailable"]) < replicas, f"PDB {name} would block every drain"
        else:
            assert int(pdb["spec"]["maxUnavailable"]) >= 1, f"PDB {name} would block every drain"
            if replicas >= 2:
                assert int(pdb["spec"]["maxUnavailable"]) < replicas, f"PDB {name} lets every pod go at once"
    # The admin pod runs for a session only (zero replicas otherwise): nothing to keep up in a drain.
    assert covered == set(deployments) - {ADMIN}
    assert deployments[ADMIN]["spec"]["replicas"] == 0


def test_selectors_select_their_own_pods_only(rendered: tuple[Object, ...]) -> None:
    for name, deployment in of_kind(rendered, "Deployment").items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert matches(selector, deployment["spec"]["template"]["metadata"]["labels"]), name
        others = [
            d
            for d, obj in workloads(rendered).items()
            if d != name and matches(selector, obj["spec"]["template"]["metadata"]["labels"])
        ]
        assert not others, f"{name}'s selector also selects {others}"


def test_services_select_existing_pods_on_their_ports(rendered: tuple[Object, ...]) -> None:
    deployments = of_kind(rendered, "Deployment")
    for name, service in of_kind(rendered, "Service").items():
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", name
        selector = service["spec"]["selector"]
        selected = [
            d for d, obj in deployments.items() if matches(selector, obj["spec"]["template"]["metadata"]["labels"])
        ]
        assert selected == [name], f"Service {name} selects {selected}"
        (port,) = service["spec"]["ports"]
        assert port["port"] == HTTP[name]
        assert named_port(container_of(deployments[name]), port["targetPort"]) == HTTP[name]


# --- Configuration: the ConfigMap, the Secret, and what refers to them -----------------------


def test_config_map_keys_are_env_keys_with_the_same_values() -> None:
    dot_env = dotenv(REPO / ".env")
    base = config_map(render("base"))
    assert set(base) <= set(dot_env), f"keys .env does not have: {sorted(set(base) - set(dot_env))}"
    assert not set(base) & SECRET_KEYS, "credentials belong in the Secret"
    drifted = {k: (v, dot_env[k]) for k, v in base.items() if k not in K8S_DIFFERENCES and v != dot_env[k]}
    assert not drifted, f"base ConfigMap differs from .env (config.env value, .env value): {drifted}"
    overlay = config_map(render("example"))
    assert set(overlay) <= set(dot_env)
    assert overlay != base, "the example overlay patches the ConfigMap"


def test_config_map_matches_the_manifests(rendered: tuple[Object, ...]) -> None:
    config = config_map(rendered)
    for name, port in HTTP.items():
        assert int(config[PORT_VARIABLE[name]]) == port, name
    url = urlsplit(config["BTC_PRICE_URL"])
    assert (url.scheme, url.hostname, url.port) == ("http", "btc-price", HTTP["btc-price"])
    assert "btc-price" in of_kind(rendered, "Service")


def test_each_secret_holds_its_url_as_a_marked_placeholder(rendered: tuple[Object, ...]) -> None:
    for name, key in SECRETS.items():
        values = secret(rendered, name)
        assert set(values) == {key}, f"{name}: one backing service's credentials, no others"
        scheme = "amqp" if key == "AMQP_URL" else "postgresql+psycopg2"
        url = urlsplit(values[key])
        assert url.scheme == scheme and url.hostname, f"{key}: {values[key]}"
        assert url.password == "CHANGE-ME", f"{key}: example values only, marked as such"
    for folder in (K8S / "base", K8S / "overlays" / "example"):
        files = sorted((folder / "credentials").glob("*.env"))
        assert len(files) == len(SECRETS), folder
        for path in files:
            assert path.name.endswith(".example.env") and "PLACEHOLDER" in path.read_text(), path


def test_every_reference_to_the_config_and_the_secrets_resolves(rendered: tuple[Object, ...]) -> None:
    """Each names a generated (hashed) object of this render and a key it has; none is optional."""
    objects = {(o["kind"], o["metadata"]["name"]): o for o in rendered if o["kind"] in {"ConfigMap", "Secret"}}
    config_name = generated(rendered, "ConfigMap", CONFIG_MAP)["metadata"]["name"]
    secret_names = {generated(rendered, "Secret", name)["metadata"]["name"] for name in SECRETS}
    for name, workload in workloads(rendered).items():
        container = container_of(workload)
        assert not any("configMapRef" in s for s in container.get("envFrom", [])), f"{name}: keys it reads, not all"
        for source in container.get("envFrom", []):
            reference = source["secretRef"]
            assert reference["name"] in secret_names and not reference.get("optional"), name
        for item in container.get("env", []):
            if "value" in item:
                continue
            kind, field = ("ConfigMap", "configMapKeyRef")
            if "secretKeyRef" in item["valueFrom"]:
                kind, field = ("Secret", "secretKeyRef")
            reference = item["valueFrom"][field]
            assert reference["name"] in ({config_name} if kind == "ConfigMap" else secret_names), f"{name}: {item}"
            assert reference["key"] in objects[(kind, reference["name"])]["data"], f"{name}: {item}"
            assert not reference.get("optional"), f"{name}: {item['name']}"


def test_the_overlay_sets_a_namespace_with_restricted_pod_security() -> None:
    objects = render("example")
    namespace = one_of_kind(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    elsewhere = []
    for obj in objects:
        if obj["kind"] != "Namespace" and obj["metadata"]["namespace"] != namespace["metadata"]["name"]:
            elsewhere.append((obj["kind"], obj["metadata"]["namespace"]))
    # Only the in-cluster backing services' side of their NetworkPolicies lives in their namespace.
    assert set(elsewhere) == {("NetworkPolicy", "btc-data")}, elsewhere
    assert all("namespace" not in obj["metadata"] for obj in render("base")), "the base lands where applied"
