"""docker/fluentd/fluent.conf and the gateway's nginx template, parsed and checked for shape.

No Fluentd or nginx can be installed from the registries this project uses for its tools, so
Fluentd's configuration syntax is parsed here (directives, nesting, `key value` parameters)
and what the cluster relies on is asserted.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btc_orders.settings import FetchBuyOrdersSettings
from tests.containers.conftest import REPO, dotenv

FLUENT_CONF = REPO / "docker" / "fluentd" / "fluent.conf"
GATEWAY_TEMPLATE = REPO / "docker" / "gateway" / "templates" / "default.conf.template"
KNOWN_DIRECTIVES = {
    "source",
    "match",
    "filter",
    "label",
    "system",
    "worker",
    "store",
    "buffer",
    "format",
    "parse",
    "inject",
}


@dataclass
class Directive:
    name: str
    argument: str = ""
    params: dict[str, str] = field(default_factory=dict)
    children: list["Directive"] = field(default_factory=list)

    def all(self, name: str) -> list["Directive"]:
        return [child for child in self.children if child.name == name]


def parse_fluentd(text: str) -> Directive:
    """Fluentd's v1 config syntax: `<name arg>` ... `</name>` blocks, `key value` lines, # comments."""
    root = Directive("root")
    stack = [root]
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if opening := re.fullmatch(r"<([a-z_]+)(?:\s+([^>]*))?>", line):
            directive = Directive(opening[1], (opening[2] or "").strip())
            stack[-1].children.append(directive)
            stack.append(directive)
        elif closing := re.fullmatch(r"</([a-z_]+)>", line):
            assert len(stack) > 1 and stack[-1].name == closing[1], f"line {number}: unbalanced </{closing[1]}>"
            stack.pop()
        else:
            parameter = re.fullmatch(r"(@?[a-z_]+)(?:\s+(.*))?", line)
            assert parameter, f"line {number}: not a parameter: {line!r}"
            assert parameter[1] not in stack[-1].params, f"line {number}: {parameter[1]} set twice"
            stack[-1].params[parameter[1]] = (parameter[2] or "").strip()
    assert len(stack) == 1, f"<{stack[-1].name}> is never closed"
    return root


def _tag_regex(pattern: str) -> str:
    regex = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith(".**", index):
            regex += r"(?:\.[^.]+)*"
            index += 3
        elif pattern.startswith("**", index):
            regex += r".*"
            index += 2
        elif pattern[index] == "*":
            regex += r"[^.]+"
            index += 1
        else:
            regex += re.escape(pattern[index])
            index += 1
    return regex


def fluentd_tag_matches(pattern: str, tag: str) -> bool:
    """Fluentd's match patterns: `*` one tag part, `**` zero or more, several patterns space-separated."""
    return any(re.fullmatch(_tag_regex(alternative), tag) for alternative in pattern.split())


def _conf() -> Directive:
    return parse_fluentd(FLUENT_CONF.read_text())


def _walk(directive: Directive) -> list[Directive]:
    return [directive, *(node for child in directive.children for node in _walk(child))]


def test_the_configuration_parses_and_uses_known_directives() -> None:
    for directive in _walk(_conf())[1:]:
        assert directive.name in KNOWN_DIRECTIVES, directive.name
        if directive.name in ("source", "match", "store", "filter"):
            assert "@type" in directive.params, f"<{directive.name} {directive.argument}> has no @type"


def test_it_receives_the_forward_protocol_on_fluentd_port() -> None:
    forward = [source for source in _conf().all("source") if source.params["@type"] == "forward"]
    assert len(forward) == 1
    assert forward[0].params["port"] == dotenv()["FLUENTD_PORT"]
    assert forward[0].params["bind"] == "0.0.0.0"  # the services are other containers


def test_the_service_events_go_to_stdout_and_to_a_file_in_the_log_volume(compose_config: dict[str, Any]) -> None:
    matches = _conf().all("match")
    tag = "btc.create_buy_order.order_created"  # btc.<service>.<event>, as btc_orders.logs sends them
    first = next(match for match in matches if fluentd_tag_matches(match.argument, tag))
    assert first.argument == "btc.**"
    assert first.params["@type"] == "copy"
    stores = {store.params["@type"]: store for store in first.all("store")}
    assert set(stores) == {"stdout", "file"}
    file_store = stores["file"]
    assert file_store.params["path"].startswith("/fluentd/log/")
    assert "${tag[1]}" in file_store.params["path"]  # one file per service
    (buffer,) = file_store.all("buffer")
    assert {"tag", "time"} <= {key.strip() for key in buffer.argument.split(",")}
    assert buffer.params["path"].startswith("/fluentd/log/")
    assert file_store.all("format")[0].params["@type"] == "json"
    # Anything else is shown too, after the btc.** match.
    assert matches[-1].argument == "**"
    volumes = {(volume["type"], volume["target"]) for volume in compose_config["services"]["log"]["volumes"]}
    assert ("volume", "/fluentd/log") in volumes
    assert ("bind", "/fluentd/etc/fluent.conf") in volumes


def test_the_healthcheck_asks_the_monitor_agent_it_configures(compose_config: dict[str, Any]) -> None:
    (monitor,) = [source for source in _conf().all("source") if source.params["@type"] == "monitor_agent"]
    assert monitor.params["bind"] == "127.0.0.1"
    probe = " ".join(compose_config["services"]["log"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{monitor.params['port']}/api/plugins.json" in probe


def test_the_logs_module_tags_events_as_the_configuration_expects() -> None:
    source = (REPO / "codebase" / "src" / "btc_orders" / "logs.py").read_text()
    assert 'f"btc.{service}"' in source


def test_the_tag_matcher_itself() -> None:
    assert fluentd_tag_matches("btc.**", "btc.fetch_buy_orders.http_request")
    assert fluentd_tag_matches("btc.**", "btc")
    assert not fluentd_tag_matches("btc.**", "other.btc")
    assert fluentd_tag_matches("**", "anything.at.all")
    assert fluentd_tag_matches("a.*", "a.b") and not fluentd_tag_matches("a.*", "a.b.c")
    assert fluentd_tag_matches("x.* btc.**", "btc.log")


# --- the gateway ------------------------------------------------------------------------------


def test_the_gateway_listens_on_the_public_ports_and_proxies_to_the_services(compose_config: dict[str, Any]) -> None:
    template = GATEWAY_TEMPLATE.read_text()
    gateway = compose_config["services"]["gateway"]
    environment = gateway["environment"]
    # envsubst only replaces variables the container has: every ${...} must be one of them.
    used = set(re.findall(r"\$\{([A-Z_]+)\}", template))
    assert used <= {*environment, "NGINX_LOCAL_RESOLVERS"}, used - {*environment}
    assert environment["NGINX_ENTRYPOINT_LOCAL_RESOLVERS"]  # makes the image fill NGINX_LOCAL_RESOLVERS
    assert "resolver ${NGINX_LOCAL_RESOLVERS}" in template
    env_file = dotenv()
    for service, variable in (
        ("create_buy_order", "CREATE_BUY_ORDER_PORT"),
        ("fetch_buy_orders", "FETCH_BUY_ORDERS_PORT"),
    ):
        assert environment[variable] == env_file[variable]
        assert f"listen ${{{variable}}};" in template
        assert f"map $host ${service} {{\n    default {service}:${{{variable}}};" in template
        assert f"proxy_pass http://${service};" in template  # a variable: resolved again, replicas found
    assert "listen 8080;" in template and "http://127.0.0.1:8080/healthz" in gateway["healthcheck"]["test"]
    assert template.count("{") == template.count("}")
    volumes = {volume["target"]: (volume["type"], Path(volume["source"])) for volume in gateway["volumes"]}
    assert volumes == {
        "/etc/nginx/templates": ("bind", GATEWAY_TEMPLATE.parent),
        "/etc/btc-orders/openapi.json": ("bind", REPO / "docs" / "openapi" / "gateway.json"),
    }


def _public_locations() -> list[dict[str, str]]:
    """Per public server, its locations (`= /path` or `/prefix/`) and their bodies, includes resolved."""
    template = GATEWAY_TEMPLATE.read_text()
    servers = [block for block in template.split("\nserver {")[1:] if "listen ${" in block.split("\n", 2)[1]]
    found = []
    for server in servers:
        for included in re.findall(r"include /etc/nginx/templates/([\w.]+);", server):
            server += (GATEWAY_TEMPLATE.parent / included).read_text()
        server = re.sub(r"(?m)^\s*#.*$", "", server)  # comments off: they may name a location
        found.append(dict(re.findall(r"location ([^{]+?) \{([^}]*)\}", server)))
    return found


def test_the_gateway_publishes_only_the_public_api() -> None:
    # Not the services' /metrics (a database read per scrape), /readyz, /healthz or their own documents.
    public = {"= /buy_orders", "/buy_orders/", "= /openapi.json", "= /docs", "/", "@rate_limited"}
    create, fetch = _public_locations()
    assert set(create) == public | {"= /buy_order", "= /capacity"}
    assert set(fetch) == public
    for locations in (create, fetch):
        assert "return 404" in locations["/"] and "proxy_pass" not in locations["/"]
        assert "alias /etc/btc-orders/openapi.json;" in locations["= /openapi.json"]
        assert "proxy_pass http://$create_buy_order;" in locations["= /docs"]


def test_the_gateway_holds_a_prefer_wait_for_the_longest_wait_fetch_buy_orders_accepts() -> None:
    """GET /buy_orders/{id} with `Prefer: wait=N` sends nothing for up to N seconds: on both public
    ports, its location must wait for upstream longer than the most READ_YOUR_WRITE_MAX_WAIT_SECONDS
    may be set to (else the gateway would cut a configured wait short with a 504)."""
    longest = next(
        rule.le
        for rule in FetchBuyOrdersSettings.model_fields["read_your_write_max_wait_seconds"].metadata
        if getattr(rule, "le", None) is not None
    )
    template = GATEWAY_TEMPLATE.read_text()
    servers = [block for block in template.split("\nserver {")[1:] if "listen ${" in block.split("\n", 2)[1]]
    assert len(servers) == 2, "expected the two public servers"
    for server in servers:
        # a prefix location ending in `/` makes nginx redirect the path without it (301): the list
        # of orders needs its own exact location next to it
        exact = re.search(r"location = /buy_orders \{(?P<body>[^}]*)\}", server)
        assert exact and "proxy_pass http://$fetch_buy_orders;" in exact["body"], server.split(";")[0].strip()
        location = re.search(r"location /buy_orders/ \{(?P<body>[^}]*)\}", server)
        assert location, f"no `location /buy_orders/` in the server of {server.split(';')[0].strip()}"
        assert "proxy_pass http://$fetch_buy_orders;" in location["body"]
        timeout = re.search(r"proxy_read_timeout (\d+)s;", location["body"])
        assert timeout and int(timeout[1]) > longest, f"{server.split(';')[0].strip()}: {location['body']}"
