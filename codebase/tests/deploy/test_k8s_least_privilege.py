"""Least privilege in deploy/k8s: who may talk to whom, and who is given which settings.

The paths: the rendered NetworkPolicies are evaluated (tests/deploy/network_policy.py, the
Kubernetes semantics) for the suite's pods, as the manifests label them, and for pods and
addresses around them (an ingress controller, Prometheus, kube-dns, strangers in the same and
other namespaces, Coinbase, the backing services where their URLs point). The settings: each
container's environment is resolved from the rendered ConfigMap and Secrets and compared
with what its process reads (the pydantic settings classes of btc_orders.settings).
"""

import base64
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from pydantic_settings import BaseSettings

from btc_orders import settings
from btc_orders.admin.__main__ import AdminSettings
from tests.deploy.conftest import Object, containers, of_kind, render, workloads
from tests.deploy.network_policy import Address, NetworkPolicies, Peer, Pod

NAME = "app.kubernetes.io/name"

# What each process reads from its environment.
SETTINGS: dict[str, type[BaseSettings]] = {
    "btc-price": settings.BtcPriceSettings,
    "create-buy-order": settings.CreateBuyOrderSettings,
    "fetch-buy-orders": settings.FetchBuyOrdersSettings,
    "outbox-relay": settings.OutboxRelaySettings,
    "read-model-sync": settings.ReadModelSyncSettings,
    "migration": settings.MigrationSettings,
    "admin": AdminSettings,
}
HTTP = {"create-buy-order": 8777, "fetch-buy-orders": 8778, "btc-price": 8779}
# Read outside the settings classes by the HTTP services: docker/gunicorn.conf.py (workers) and
# btc_orders.metrics (prometheus-client's multiprocess directory).
HTTP_PROCESS_VARIABLES = {"WEB_CONCURRENCY", "PROMETHEUS_MULTIPROC_DIR"}

# The credentials, who uses them (the list), and the label the manifests document for
# the backing service's pods when it runs in-cluster.
USERS = {
    "WRITE_MODEL_DB_URL": {"create-buy-order", "outbox-relay", "migration", "admin"},
    "READ_MODEL_DB_URL": {"fetch-buy-orders", "read-model-sync", "migration", "admin"},
    "AMQP_URL": {"outbox-relay", "read-model-sync", "admin"},
}
SERVICE_LABEL = {"WRITE_MODEL_DB_URL": "write-model", "READ_MODEL_DB_URL": "read-model", "AMQP_URL": "rabbitmq"}
DEFAULT_PORT = {"postgresql+psycopg2": 5432, "postgresql": 5432, "postgres": 5432, "amqp": 5672, "amqps": 5671}

# Outside the cluster: Coinbase's side of the internet, and addresses that must stay out of
# reach (a private network, the cloud's metadata service, an IPv6 unique-local address).
PUBLIC = [Address("203.0.113.10"), Address("2001:db8::10")]
PRIVATE = [Address("10.20.30.40"), Address("192.168.1.10"), Address("172.20.0.5"), Address("169.254.169.254")]
PRIVATE += [Address("100.64.1.1"), Address("fd00::10")]


# --- The environment each container gets ---------------------------------------------------


@dataclass(frozen=True)
class Setting:
    value: str
    kind: str  # "literal", "ConfigMap" or "Secret"
    source: str  # the object's name ("" for a literal)


def data_of(objects: tuple[Object, ...], kind: str, name: str) -> dict[str, str]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: referenced, but this render has {len(found)}"
    values: dict[str, str] = found[0].get("data", {})
    if kind == "Secret":
        return {key: base64.b64decode(value).decode() for key, value in values.items()}
    return dict(values)


def config_map_name(objects: tuple[Object, ...]) -> str:
    (name,) = [o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"]
    return str(name)


def environment(objects: tuple[Object, ...], container: Object) -> dict[str, Setting]:
    """The variables the container starts with (envFrom first, then env, which wins)."""
    env: dict[str, Setting] = {}
    for source in container.get("envFrom", []):
        for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if field in source:
                name = source[field]["name"]
                for key, value in data_of(objects, kind, name).items():
                    env[source.get("prefix", "") + key] = Setting(value, kind, name)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = Setting(item["value"], "literal", "")
            continue
        reference = item["valueFrom"]
        kind, field = ("ConfigMap", "configMapKeyRef") if "configMapKeyRef" in reference else ("Secret", "secretKeyRef")
        name, key = reference[field]["name"], reference[field]["key"]
        values = data_of(objects, kind, name)
        assert key in values, f"{container['name']}: {item['name']} refers to {kind} {name}, which has no {key}"
        env[item["name"]] = Setting(values[key], kind, name)
    return env


def main_container(workload: Object) -> Object:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    main: Object = container
    return main


def environments(objects: tuple[Object, ...]) -> dict[str, dict[str, Setting]]:
    return {name: environment(objects, main_container(w)) for name, w in workloads(objects).items()}


def reads(name: str) -> set[str]:
    return {info.alias for info in SETTINGS[name].model_fields.values() if info.alias}


def required(name: str) -> set[str]:
    return {info.alias for info in SETTINGS[name].model_fields.values() if info.alias and info.is_required()}


def test_every_workload_is_a_known_process(rendered: tuple[Object, ...]) -> None:
    assert set(workloads(rendered)) == set(SETTINGS)


def test_each_process_is_given_the_settings_it_reads_and_no_others(rendered: tuple[Object, ...]) -> None:
    configured = set(data_of(rendered, "ConfigMap", config_map_name(rendered)))
    for name, env in environments(rendered).items():
        extra = HTTP_PROCESS_VARIABLES if name in HTTP else set()
        unread = set(env) - reads(name) - extra
        assert not unread, f"{name} is given settings its process does not read: {sorted(unread)}"
        missing = required(name) - set(env)
        assert not missing, f"{name} lacks settings it cannot start without: {sorted(missing)}"
        # A value the operator configured must reach every process that reads it, or that
        # process would silently run on the code's default instead.
        ignored = ((reads(name) | extra) & configured) - set(env)
        assert not ignored, f"{name} reads {sorted(ignored)}, set in the ConfigMap, but is not given them"


def test_each_credential_reaches_exactly_the_processes_that_use_it(rendered: tuple[Object, ...]) -> None:
    envs = environments(rendered)
    for key, users in USERS.items():
        holders = {name for name, env in envs.items() if key in env}
        assert holders == users, f"{key} is given to {sorted(holders)}"
        assert holders == {name for name in SETTINGS if key in reads(name)}, key
        for name in holders:
            assert envs[name][key].kind == "Secret", f"{name}: {key} must come from a Secret"
    assert not set(USERS) & set(envs["btc-price"]), "btc_price uses no database and no broker"


def test_a_pod_references_only_secrets_whose_every_key_it_reads(rendered: tuple[Object, ...]) -> None:
    """A node's kubelet fetches whole Secrets: one holding other credentials must not be referenced."""
    for name, workload in workloads(rendered).items():
        for container in containers(workload):
            referenced = {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
            referenced |= {
                e["valueFrom"]["secretKeyRef"]["name"]
                for e in container.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            }
            for secret in referenced:
                unread = set(data_of(rendered, "Secret", secret)) - reads(name)
                assert not unread, f"{name} references Secret {secret}, which also holds {sorted(unread)}"


# --- The network: pods, addresses, and what the policies allow ------------------------------


def app_namespace(objects: tuple[Object, ...]) -> str:
    namespaces = [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"]
    return str(namespaces[0]) if namespaces else "default"  # the base lands where it is applied


def suite_pods(objects: tuple[Object, ...]) -> dict[str, Pod]:
    """One pod of each workload, labelled and with the named ports its template gives it."""
    namespace = app_namespace(objects)
    pods = {}
    for number, (name, workload) in enumerate(sorted(workloads(objects).items()), start=10):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        ports = {p["name"]: p["containerPort"] for c in containers(workload) for p in c.get("ports", []) if "name" in p}
        pods[name] = Pod(name, namespace, labels, f"10.244.0.{number}", ports)
    return pods


def around(namespace: str) -> dict[str, Pod]:
    """Pods that are not the suite's: the documented neighbours, and strangers."""

    def pod(name: str, ns: str, labels: dict[str, str], number: int) -> Pod:
        return Pod(name, ns, labels, f"10.244.1.{number}")

    return {
        "stranger here": pod("stranger here", namespace, {NAME: "debug-shell"}, 1),
        "stranger elsewhere": pod("stranger elsewhere", "elsewhere", {NAME: "debug-shell"}, 2),
        "ingress controller": pod("ingress controller", "ingress-nginx", {NAME: "ingress-nginx"}, 3),
        "prometheus": pod("prometheus", "monitoring", {NAME: "prometheus"}, 4),
        "grafana": pod("grafana", "monitoring", {NAME: "grafana"}, 5),
        "prometheus elsewhere": pod("prometheus elsewhere", "elsewhere", {NAME: "prometheus"}, 6),
        "kube-dns": pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, 7),
    }


@dataclass(frozen=True)
class Network:
    policies: NetworkPolicies
    suite: dict[str, Pod]
    others: dict[str, Pod]
    envs: dict[str, dict[str, Setting]]

    @property
    def everyone(self) -> dict[str, Pod]:
        return {**self.suite, **self.others}

    def reaching(self, destination: Peer, port: int, protocol: str = "TCP") -> set[str]:
        """The pods (by name) that may connect to `destination` on `port`."""
        return {name for name, pod in self.everyone.items() if self.policies.allows(pod, destination, port, protocol)}

    def suite_reaching(self, destination: Peer, port: int) -> set[str]:
        """The suite's pods (by name) that may connect to `destination` on `port`."""
        return self.reaching(destination, port) & set(self.suite)

    def backing_service(self, key: str) -> tuple[Pod, int]:
        """The in-cluster pod behind a credential's URL, and the URL's port."""
        (url,) = {env[key].value for env in self.envs.values() if key in env}
        parts = urlsplit(url)
        assert parts.hostname, url
        namespace = namespace_of_host(parts.hostname, app_namespace_of(self.suite))
        pod = Pod(SERVICE_LABEL[key], namespace, {NAME: SERVICE_LABEL[key]}, "10.244.2.10")
        return pod, parts.port or DEFAULT_PORT[parts.scheme]


def namespace_of_host(host: str, own: str) -> str:
    """The namespace of a Service's DNS name: <service>[.<namespace>[.svc.cluster.local]]."""
    parts = host.split(".")
    return parts[1] if len(parts) > 1 else own


def app_namespace_of(suite: dict[str, Pod]) -> str:
    (namespace,) = {pod.namespace for pod in suite.values()}
    return namespace


def network(objects: tuple[Object, ...]) -> Network:
    suite = suite_pods(objects)
    return Network(
        NetworkPolicies(objects, app_namespace(objects)), suite, around(app_namespace(objects)), environments(objects)
    )


def test_every_pod_of_the_suite_is_isolated_both_ways(rendered: tuple[Object, ...]) -> None:
    net = network(rendered)
    for name, pod in net.suite.items():
        assert net.policies.isolated(pod, "ingress") and net.policies.isolated(pod, "egress"), name
        for port in {*pod.ports.values(), 22, 80}:
            assert not net.policies.allows(net.others["stranger here"], pod, port), f"{name}:{port} is open"
        for port in (22, 80, 443, 5432, 5672, 8080):
            assert not net.policies.allows(pod, net.others["stranger elsewhere"], port), f"{name} reaches out on {port}"
            assert not net.policies.allows(pod, net.others["stranger here"], port), f"{name} reaches a neighbour"
            for address in PRIVATE + PUBLIC:
                may = name == "btc-price" and port == 443 and address in PUBLIC  # Coinbase
                assert net.policies.allows(pod, address, port) == may, f"{name} -> {address.ip}:{port}"


def test_only_create_buy_order_reaches_btc_price(rendered: tuple[Object, ...]) -> None:
    net = network(rendered)
    btc_price = net.suite["btc-price"]
    (port,) = btc_price.ports.values()
    # Prometheus scrapes /metrics on the same port; NetworkPolicy sees ports, not paths.
    assert net.reaching(btc_price, port) == {"create-buy-order", "prometheus"}
    # Each end holds alone: btc-price's ingress admits no one else, and no other pod of the
    # suite may even send to it.
    accepted = {name for name, pod in net.everyone.items() if net.policies.accepts(btc_price, pod, port)}
    assert accepted == {"create-buy-order", "prometheus"}
    assert {name for name, pod in net.suite.items() if net.policies.sends(pod, btc_price, port)} == {"create-buy-order"}
    for other in (9100, 8777, 443):
        assert not net.reaching(btc_price, other), f"btc-price:{other}"
    url = urlsplit(net.envs["create-buy-order"]["BTC_PRICE_URL"].value)
    assert url.port == port, "create_buy_order is allowed the port its BTC_PRICE_URL names"


def test_only_btc_price_reaches_coinbase_and_only_over_https(rendered: tuple[Object, ...]) -> None:
    net = network(rendered)
    coinbase = urlsplit(net.envs["btc-price"]["COINBASE_API_URL"].value)
    assert coinbase.scheme == "https"
    port = coinbase.port or 443
    for address in PUBLIC:
        assert net.suite_reaching(address, port) == {"btc-price"}, address
        assert not net.suite_reaching(address, 80), f"{address}:80"
    for address in PRIVATE:
        assert not net.suite_reaching(address, port), f"{address} is inside: out of reach"


def test_each_backing_service_accepts_exactly_the_processes_that_use_it(rendered: tuple[Object, ...]) -> None:
    net = network(rendered)
    for key, users in USERS.items():
        service, port = net.backing_service(key)
        reaching = net.suite_reaching(service, port)
        assert reaching == users, f"{key}: {service.namespace}/{service.labels[NAME]}:{port} is reached by {reaching}"
        senders = {name for name, pod in net.suite.items() if net.policies.sends(pod, service, port)}
        assert senders == users, f"{key}: the egress side alone lets {senders} out to it"
        for address in PRIVATE + PUBLIC:
            assert not net.suite_reaching(address, port), f"{key}: {address}:{port} is reachable"


def test_in_cluster_backing_services_refuse_everyone_else() -> None:
    """The example overlay's policies in btc-data: the other end of each connection."""
    objects = render("example")
    net = network(objects)
    for key, users in USERS.items():
        service, port = net.backing_service(key)
        assert service.namespace == "btc-data", key
        assert net.policies.isolated(service, "ingress"), f"{key}: its pods accept anyone"
        assert net.reaching(service, port) == users, key
        accepted = {name for name, pod in net.everyone.items() if net.policies.accepts(service, pod, port)}
        assert accepted == users, f"{key}: the service's ingress side alone admits {accepted}"
        # The ingress side holds alone too: a pod of the suite's namespace that bypasses the
        # egress policies (not labelled as the suite's) is refused by the service.
        impostor = Pod("impostor", app_namespace(objects), {NAME: "debug-shell"}, "10.244.1.99")
        assert not net.policies.allows(impostor, service, port), key


def test_the_public_apis_accept_the_ingress_controller_and_prometheus(rendered: tuple[Object, ...]) -> None:
    net = network(rendered)
    for name in ("create-buy-order", "fetch-buy-orders"):
        assert net.reaching(net.suite[name], HTTP[name]) == {"ingress controller", "prometheus"}, name


def test_prometheus_scrapes_every_metrics_port_and_nobody_else_does(rendered: tuple[Object, ...]) -> None:
    net = network(rendered)
    scraped = 0
    for name, deployment in of_kind(rendered, "Deployment").items():
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true":
            continue
        scraped += 1
        port = int(annotations["prometheus.io/port"])
        reaching = net.reaching(net.suite[name], port)
        assert "prometheus" in reaching, f"{name}:{port}"
        assert not reaching & {"grafana", "prometheus elsewhere", "stranger here", "stranger elsewhere"}, name
    assert scraped == 5


def test_every_process_resolves_names(rendered: tuple[Object, ...]) -> None:
    net = network(rendered)
    dns = net.others["kube-dns"]
    for name, pod in net.suite.items():
        for protocol in ("UDP", "TCP"):
            assert net.policies.allows(pod, dns, 53, protocol), f"{name}: DNS over {protocol}"
        assert not net.policies.allows(pod, dns, 9153), f"{name}: only DNS on kube-dns"


def test_the_processes_that_log_to_fluentd_may_reach_it_and_only_then(rendered: tuple[Object, ...]) -> None:
    net = network(rendered)
    for name, env in net.envs.items():
        host, port = env["FLUENTD_HOST"].value, int(env["FLUENTD_PORT"].value)
        namespace = namespace_of_host(host, app_namespace_of(net.suite))
        fluentd = Pod("fluentd", namespace, {NAME: "fluentd"}, "10.244.2.20")
        assert net.policies.allows(net.suite[name], fluentd, port) == bool(host), f"{name}: FLUENTD_HOST={host!r}"


# --- The model itself: checked on policies whose meaning the Kubernetes docs spell out -------


@pytest.mark.parametrize(
    ("peer", "source", "allowed"),
    [
        ({"podSelector": {"matchLabels": {"role": "client"}}}, ("here", "client"), True),
        ({"podSelector": {"matchLabels": {"role": "client"}}}, ("there", "client"), False),  # own namespace only
        ({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "there"}}}, ("there", "any"), True),
        (
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "there"}},
                "podSelector": {"matchLabels": {"role": "client"}},
            },
            ("there", "any"),
            False,  # both selectors: the pod must match them both
        ),
        ({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}, ("there", "any"), True),
        (
            {"podSelector": {"matchExpressions": [{"key": "role", "operator": "NotIn", "values": ["x"]}]}},
            ("here", "x"),
            False,
        ),
    ],
)
def test_the_policy_model_reads_peers_as_kubernetes_does(peer: Object, source: tuple[str, str], allowed: bool) -> None:
    policy = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "db", "namespace": "here"},
        "spec": {
            "podSelector": {"matchLabels": {"role": "db"}},
            "ingress": [{"from": [peer], "ports": [{"port": "pg"}]}],
        },
    }
    policies = NetworkPolicies([policy], "here")
    db = Pod("db", "here", {"role": "db"}, "10.2.0.1", {"pg": 5432})
    client = Pod("client", source[0], {"role": source[1]}, "10.3.0.1")
    assert policies.allows(client, db, 5432) is allowed
    assert not policies.allows(client, db, 5433), "a named port is that port only"
    assert policies.allows(db, client, 80), "no Egress policy type: egress stays open"
    outside = Pod("client", source[0], {"role": source[1]}, "10.1.0.1")
    if "ipBlock" in peer:
        assert not policies.allows(outside, db, 5432), "an excepted address"
