"""What rendered NetworkPolicies allow: the Kubernetes semantics, applied to pods and addresses.

No cluster runs here, so the tests ask this model instead of a network plugin. It follows the
networking.k8s.io/v1 rules: a pod selected by no policy of a direction is open in that
direction; once selected, a connection passes if any rule of any selecting policy matches the
peer and the port; a rule's missing or empty `from`/`to`/`ports` matches everything; a peer's
podSelector alone means pods of the policy's own namespace, a namespaceSelector alone every
pod of the matching namespaces, both together the matching pods of the matching namespaces;
an ipBlock matches addresses in its CIDR and outside its exceptions; a named port is the
destination pod's container port of that name. A connection between two pods needs the
sender's egress and the receiver's ingress; one to an address outside the cluster needs the
sender's egress only.
"""

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NAMESPACE_NAME = "kubernetes.io/metadata.name"  # the label the API server puts on every namespace

Object = dict[str, Any]


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    ip: str
    ports: Mapping[str, int] = field(default_factory=dict)  # named container ports


@dataclass(frozen=True)
class Address:
    """An address outside the cluster (Coinbase, a managed database)."""

    ip: str


Peer = Pod | Address


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions); an empty one selects everything."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


class NetworkPolicies:
    def __init__(self, objects: Iterable[Object], default_namespace: str) -> None:
        """The NetworkPolicies among `objects`; one without a namespace lands in `default_namespace`."""
        self.policies = [
            (obj["metadata"].get("namespace", default_namespace), obj["spec"])
            for obj in objects
            if obj["kind"] == "NetworkPolicy"
        ]

    def allows(self, source: Pod, destination: Peer, port: int, protocol: str = "TCP") -> bool:
        """May `source` open a connection to `destination` on `port`? (Both ends agree.)"""
        if not self.sends(source, destination, port, protocol):
            return False
        return isinstance(destination, Address) or self.accepts(destination, source, port, protocol)

    def sends(self, source: Pod, destination: Peer, port: int, protocol: str = "TCP") -> bool:
        """Does the sender's side (its egress) let the connection out?"""
        ports = destination.ports if isinstance(destination, Pod) else {}
        return self._permits(source, "egress", destination, port, protocol, ports)

    def accepts(self, destination: Pod, source: Peer, port: int, protocol: str = "TCP") -> bool:
        """Does the receiver's side (its ingress) let the connection in?"""
        return self._permits(destination, "ingress", source, port, protocol, destination.ports)

    def isolated(self, pod: Pod, direction: str) -> bool:
        """Is `pod` selected by a policy for `direction` ("ingress" or "egress")?"""
        return any(True for _ in self._selecting(pod, direction))

    def _selecting(self, pod: Pod, direction: str) -> Iterable[tuple[str, Object]]:
        for namespace, spec in self.policies:
            selected = namespace == pod.namespace and selects(spec["podSelector"], pod.labels)
            if selected and direction in _policy_types(spec):
                yield namespace, spec

    def _permits(
        self, pod: Pod, direction: str, peer: Peer, port: int, protocol: str, ports: Mapping[str, int]
    ) -> bool:
        selecting = list(self._selecting(pod, direction))
        if not selecting:
            return True
        peers_field = "from" if direction == "ingress" else "to"
        for namespace, spec in selecting:
            for rule in spec.get(direction, []):
                peers = rule.get(peers_field) or [{}]
                if any(_peer_matches(entry, namespace, peer) for entry in peers) and _port_matches(
                    rule.get("ports"), port, protocol, ports
                ):
                    return True
        return False


def _policy_types(spec: Object) -> set[str]:
    declared = spec.get("policyTypes")
    if declared is None:  # the API server's default
        declared = ["Ingress", *(["Egress"] if "egress" in spec else [])]
    return {kind.lower() for kind in declared}


def _peer_matches(entry: Object, policy_namespace: str, peer: Peer) -> bool:
    if not entry:  # a missing `from`/`to` (modelled as one empty entry): every peer
        return True
    if "ipBlock" in entry:
        address = ipaddress.ip_address(peer.ip)
        block = entry["ipBlock"]
        network = ipaddress.ip_network(block["cidr"])
        if address.version != network.version or address not in network:
            return False
        return not any(
            address in ipaddress.ip_network(excluded)
            for excluded in block.get("except", [])
            if ipaddress.ip_network(excluded).version == address.version
        )
    if not isinstance(peer, Pod):
        return False  # pod and namespace selectors match pods only
    if "namespaceSelector" in entry:
        if not selects(entry["namespaceSelector"], {NAMESPACE_NAME: peer.namespace}):
            return False
    elif peer.namespace != policy_namespace:
        return False
    return selects(entry.get("podSelector", {}), peer.labels)


def _port_matches(rule_ports: list[Object] | None, port: int, protocol: str, named: Mapping[str, int]) -> bool:
    if not rule_ports:
        return True
    for entry in rule_ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            if named.get(wanted) == port:
                return True
        elif wanted <= port <= entry.get("endPort", wanted):
            return True
    return False
