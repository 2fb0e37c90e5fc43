"""docker-compose.yml, checked by Docker Compose v2 itself and by the Compose Specification schema."""

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from btc_orders import settings
from tests.containers.conftest import (
    BACKING_SERVICES,
    HTTP_SERVICES,
    PACKAGE_SERVICES,
    PORT_VARIABLE,
    REPO,
    WORKERS,
    compose,
    compose_env,
    dockerfile_instructions,
    run,
    tool,
)

LONG_LIVED = (*HTTP_SERVICES, *WORKERS)

# What each process of the package needs before it starts (SPEC 2, 7): condition per dependency.
DEPENDS_ON = {
    "migration": {"write_model": "service_healthy", "read_model": "service_healthy", "log": "service_started"},
    "btc_price": {"log": "service_started"},
    "create_buy_order": {
        "migration": "service_completed_successfully",
        "write_model": "service_healthy",
        "btc_price": "service_healthy",
        "log": "service_started",
    },
    "fetch_buy_orders": {
        "migration": "service_completed_successfully",
        "read_model": "service_healthy",
        "log": "service_started",
    },
    "outbox_relay": {
        "migration": "service_completed_successfully",
        "write_model": "service_healthy",
        "queue": "service_healthy",
        "log": "service_started",
    },
    "read_model_sync": {
        "migration": "service_completed_successfully",
        "read_model": "service_healthy",
        "queue": "service_healthy",
        "log": "service_started",
    },
    "gateway": {"create_buy_order": "service_healthy", "fetch_buy_orders": "service_healthy"},
}


def test_docker_compose_accepts_the_file_without_an_engine() -> None:
    result = compose("config", "--quiet")
    assert result.returncode == 0, result.stderr
    version = run(tool("docker-compose"), "version", "--short")
    assert version.stdout.startswith("2."), version.stdout


def test_ports_come_from_dot_env_and_a_missing_one_is_named() -> None:
    # With an empty interpolation file, compose must stop and name the variable: nothing is hard-coded.
    result = compose("--env-file", "/dev/null", "config", "--quiet")
    assert result.returncode != 0
    assert re.search(r"[A-Z_]+ must be set in .env", result.stderr)


def test_the_file_and_its_resolved_form_match_the_compose_specification(tmp_path: Path) -> None:
    resolved = compose("config")
    assert resolved.returncode == 0, resolved.stderr
    (tmp_path / "resolved.yml").write_text(resolved.stdout)
    for path in (REPO / "docker-compose.yml", tmp_path / "resolved.yml"):
        result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path))
        assert result.returncode == 0, f"{path.name}: {result.stdout}{result.stderr}"


def test_the_services_are_the_suite_and_its_backing_services(compose_config: dict[str, Any]) -> None:
    assert set(compose_config["services"]) == {*PACKAGE_SERVICES, *BACKING_SERVICES, "gateway"}
    # The admin CLI is a one-off service of its own profile: `up` never starts it.
    raw = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert raw["admin"]["profiles"] == ["admin"]
    assert compose_config["name"] == "btc-orders"


def test_backing_services_use_the_supported_images(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert services["write_model"]["image"] == "postgres:17-alpine"
    assert services["read_model"]["image"] == "postgres:17-alpine"
    assert services["queue"]["image"] == "rabbitmq:4-management-alpine"
    fluentd = re.fullmatch(r"fluent/fluentd:v1\.(\d+)\.\d+-debian-\d+\.\d+", services["log"]["image"])
    assert fluentd and int(fluentd[1]) >= 17, services["log"]["image"]
    assert re.fullmatch(r"nginxinc/nginx-unprivileged:\d+\.\d+\.\d+-alpine", services["gateway"]["image"])


def test_every_package_service_has_its_image_and_the_dockerfile_that_builds_it(compose_config: dict[str, Any]) -> None:
    for name in PACKAGE_SERVICES:
        service = compose_config["services"][name]
        assert service["image"] == f"btc-orders/{name}:latest"
        assert Path(service["build"]["context"]) == REPO
        dockerfile = REPO / service["build"]["dockerfile"]
        assert dockerfile == REPO / "docker" / "services" / name / "Dockerfile"
        assert ("FROM", f"btc-orders/{name}-base:latest") in dockerfile_instructions(dockerfile)
    for name, service in compose_config["services"].items():
        assert service.get("image") or service.get("build"), f"{name} has neither image nor build"


def test_every_service_has_a_healthcheck_or_says_why_not(compose_config: dict[str, Any]) -> None:
    for name, service in compose_config["services"].items():
        check = service.get("healthcheck")
        if check and not check.get("disable"):
            assert check["test"][0] in ("CMD", "CMD-SHELL"), name
            continue
        reason = service.get("x-no-healthcheck")
        assert isinstance(reason, str) and len(reason) > 20, f"{name}: no healthcheck and no x-no-healthcheck reason"
    without = {name for name, service in compose_config["services"].items() if "healthcheck" not in service}
    assert without == {"migration"}


def test_http_healthchecks_probe_each_service_port_variable(compose_config: dict[str, Any]) -> None:
    for name in HTTP_SERVICES:
        test = compose_config["services"][name]["healthcheck"]["test"]
        assert test == ["CMD", "python", "/app/healthcheck.py", PORT_VARIABLE[name]]
    metrics_port = {"outbox_relay": "OUTBOX_RELAY_METRICS_PORT", "read_model_sync": "READ_MODEL_SYNC_METRICS_PORT"}
    for name in WORKERS:
        test = compose_config["services"][name]["healthcheck"]["test"]
        assert test == ["CMD", "python", "/app/healthcheck.py", metrics_port[name]]
    for name in ("write_model", "read_model"):
        assert "pg_isready" in " ".join(compose_config["services"][name]["healthcheck"]["test"])
    assert "rabbitmq-diagnostics" in compose_config["services"]["queue"]["healthcheck"]["test"]


def test_start_order_waits_on_health_and_on_the_migration(compose_config: dict[str, Any]) -> None:
    for name, wanted in DEPENDS_ON.items():
        depends_on = compose_config["services"][name].get("depends_on", {})
        got = {dependency: spec["condition"] for dependency, spec in depends_on.items()}
        assert got == wanted, name
    for name, service in compose_config["services"].items():
        for dependency, spec in service.get("depends_on", {}).items():
            if "healthcheck" in compose_config["services"][dependency]:
                assert spec["condition"] == "service_healthy" or dependency == "log", f"{name} -> {dependency}"


def test_restart_policies_init_and_grace(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert services["migration"]["restart"] == "no"
    for name in (*LONG_LIVED, *BACKING_SERVICES, "gateway"):
        assert services[name]["restart"] == "unless-stopped", name
    for name in PACKAGE_SERVICES:
        assert services[name]["init"] is True, name
        assert services[name]["stop_grace_period"] == "30s", name


def test_only_the_gateway_publishes_and_only_the_public_ports(
    compose_config: dict[str, Any], env_file: dict[str, str]
) -> None:
    published = {
        name: sorted((int(port["published"]), int(port["target"])) for port in service.get("ports", []))
        for name, service in compose_config["services"].items()
        if service.get("ports")
    }
    create, fetch = int(env_file["CREATE_BUY_ORDER_PORT"]), int(env_file["FETCH_BUY_ORDERS_PORT"])
    assert published == {"gateway": [(create, create), (fetch, fetch)]}
    # Bound where .env says (loopback by default), not on every interface.
    assert {port["host_ip"] for port in compose_config["services"]["gateway"]["ports"]} == {env_file["PUBLISH_ADDRESS"]}
    for name in HTTP_SERVICES:  # reachable inside the cluster on the port its variable names
        assert compose_config["services"][name]["expose"] == [env_file[PORT_VARIABLE[name]]]


# The settings class each process loads, and what else reads the environment in its image.
SETTINGS_OF = {
    "btc_price": settings.BtcPriceSettings,
    "create_buy_order": settings.CreateBuyOrderSettings,
    "fetch_buy_orders": settings.FetchBuyOrdersSettings,
    "outbox_relay": settings.OutboxRelaySettings,
    "read_model_sync": settings.ReadModelSyncSettings,
    "migration": settings.MigrationSettings,
}
GUNICORN_READS = {"create_buy_order": {"WEB_CONCURRENCY"}, "fetch_buy_orders": {"WEB_CONCURRENCY"}}


def test_each_service_gets_exactly_the_settings_it_reads_with_the_values_of_dot_env(
    compose_config: dict[str, Any], env_file: dict[str, str]
) -> None:
    assert SETTINGS_OF.keys() == set(PACKAGE_SERVICES)
    for name, settings_class in SETTINGS_OF.items():
        service = compose_config["services"][name]
        assert "env_file" not in service, name  # .env whole would hand every service every credential
        reads = {field.alias for field in settings_class.model_fields.values() if field.alias}
        reads |= GUNICORN_READS.get(name, set())
        environment = service["environment"]
        assert set(environment) == reads & set(env_file), name
        for variable, value in environment.items():
            assert value == env_file[variable], f"{name}: {variable}"


def test_btc_price_holds_no_credentials_and_the_apis_only_their_own_database(compose_config: dict[str, Any]) -> None:
    def credentials(name: str) -> set[str]:
        environment = compose_config["services"][name]["environment"]
        return {variable for variable in environment if variable.endswith(("_DB_URL", "AMQP_URL"))}

    assert credentials("btc_price") == set()
    assert credentials("create_buy_order") == {"WRITE_MODEL_DB_URL"}
    assert credentials("fetch_buy_orders") == {"READ_MODEL_DB_URL"}
    assert credentials("outbox_relay") == {"WRITE_MODEL_DB_URL", "AMQP_URL"}
    assert credentials("read_model_sync") == {"READ_MODEL_DB_URL", "AMQP_URL"}


def test_a_shell_variable_wins_over_dot_env(env_file: dict[str, str]) -> None:
    result = run(tool("docker-compose"), "--project-directory", str(REPO), "config", env=compose_env({"BTC_CAP": "42"}))
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["services"]["create_buy_order"]["environment"]["BTC_CAP"] == "42"
    assert env_file["BTC_CAP"] != "42"


def test_app_containers_and_the_gateway_run_with_least_privilege(compose_config: dict[str, Any]) -> None:
    for name in (*PACKAGE_SERVICES, "gateway"):
        service = compose_config["services"][name]
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["read_only"] is True, name
        assert any(str(mount).startswith("/tmp") for mount in service["tmpfs"]), name
    for name in ("write_model", "read_model", "queue", "log"):
        assert "no-new-privileges:true" in compose_config["services"][name]["security_opt"], name


def test_upstream_images_are_variables_defaulting_to_the_official_images() -> None:
    raw = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert raw["write_model"]["image"] == raw["read_model"]["image"] == "${POSTGRES_IMAGE:-postgres:17-alpine}"
    assert raw["queue"]["image"] == "${RABBITMQ_IMAGE:-rabbitmq:4-management-alpine}"
    assert raw["log"]["image"].startswith("${FLUENTD_IMAGE:-fluent/fluentd:v1.1")
    assert raw["gateway"]["image"].startswith("${NGINX_IMAGE:-nginxinc/nginx-unprivileged:")


def test_backing_services_match_the_urls_in_dot_env(compose_config: dict[str, Any], env_file: dict[str, str]) -> None:
    services = compose_config["services"]
    for variable, name in (("WRITE_MODEL_DB_URL", "write_model"), ("READ_MODEL_DB_URL", "read_model")):
        url = urlsplit(env_file[variable])
        environment = services[name]["environment"]
        assert (url.hostname, url.port or 5432) == (name, 5432), variable
        assert url.username == environment["POSTGRES_USER"], variable
        assert url.password == environment["POSTGRES_PASSWORD"], variable
        assert url.path.lstrip("/") == environment["POSTGRES_DB"], variable
        assert any(
            volume["target"] == "/var/lib/postgresql/data" and volume["type"] == "volume"
            for volume in services[name]["volumes"]
        )
    amqp = urlsplit(env_file["AMQP_URL"])
    assert (amqp.hostname, amqp.port) == ("queue", 5672)
    assert (amqp.username, amqp.password) == ("guest", "guest")  # the image lets guest in from other containers
    price = urlsplit(env_file["BTC_PRICE_URL"])
    assert (price.hostname, price.port) == ("btc_price", int(env_file["BTC_PRICE_PORT"]))
    assert env_file["FLUENTD_HOST"] == "log"
    assert services["log"]["expose"] == [env_file["FLUENTD_PORT"]]


def test_the_services_the_docs_scale_can_have_replicas(tmp_path: Path) -> None:
    # No container_name and no host port on them, so `--scale` (or deploy.replicas) cannot collide.
    scaled = ("create_buy_order", "fetch_buy_orders", "read_model_sync", "outbox_relay")
    raw = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name in scaled:
        assert "container_name" not in raw["services"][name]
        assert "ports" not in raw["services"][name]
    override = tmp_path / "replicas.yml"
    override.write_text(yaml.safe_dump({"services": {name: {"deploy": {"replicas": 3}} for name in scaled}}))
    result = run(
        tool("docker-compose"),
        "--project-directory",
        str(REPO),
        "--file",
        str(REPO / "docker-compose.yml"),
        "--file",
        str(override),
        "config",
        env=compose_env(),
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert all(services[name]["deploy"]["replicas"] == 3 for name in scaled)


def test_every_service_has_cpu_and_memory_limits(compose_config: dict[str, Any]) -> None:
    # Sized from measurement (docs/containers.md): one runaway container cannot starve the others.
    for name, service in compose_config["services"].items():
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert float(limits.get("cpus", 0)) > 0, f"{name}: no CPU limit"
        assert int(limits.get("memory", 0)) >= 64 * 2**20, f"{name}: no memory limit (or under 64 MiB)"
