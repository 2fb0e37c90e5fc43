"""Each container and each Procfile line starts an entry point that exists in the package."""

import http.server
import importlib
import importlib.util
import runpy
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.containers.conftest import (
    HTTP_SERVICES,
    PACKAGE_SERVICES,
    PORT_VARIABLE,
    REPO,
    SERVICES_DIR,
    WORKERS,
    dockerfile_instructions,
    run,
)

GUNICORN_CONF = REPO / "docker" / "gunicorn.conf.py"
HEALTHCHECK = REPO / "docker" / "healthcheck.py"


def _module_runs(module: str) -> None:
    """`python -m module` works: a package with a __main__ under codebase/src/btc_orders/services/."""
    assert module.startswith("btc_orders.services."), module
    name = module.removeprefix("btc_orders.services.")
    assert (SERVICES_DIR / name / "__main__.py").is_file(), module
    assert importlib.util.find_spec(f"{module}.__main__") is not None, module


def _gunicorn_settings(monkeypatch: pytest.MonkeyPatch, **environment: str) -> dict[str, Any]:
    for variable in ("BTC_ORDERS_SERVICE", "WEB_CONCURRENCY", *PORT_VARIABLE.values()):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    return runpy.run_path(str(GUNICORN_CONF))


@pytest.mark.parametrize("name", PACKAGE_SERVICES)
def test_the_image_command_starts_an_existing_entry_point(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    instructions = dockerfile_instructions(REPO / "docker" / "services" / name / "Dockerfile")
    command = next(arguments for keyword, arguments in instructions if keyword == "CMD")
    if name in HTTP_SERVICES:
        # gunicorn loads the app that gunicorn.conf.py names for BTC_ORDERS_SERVICE: a factory in btc_orders.asgi.
        settings = _gunicorn_settings(monkeypatch, BTC_ORDERS_SERVICE=name)
        module, _, factory = settings["wsgi_app"].partition(":")
        assert factory == f"{name}()"
        assert callable(getattr(importlib.import_module(module), name))
        assert settings["worker_class"] == "uvicorn_worker.UvicornWorker"
        importlib.import_module("uvicorn_worker")
        _module_runs(f"btc_orders.services.{name}")  # the same service without gunicorn (./run.sh --local)
    else:
        _module_runs(command.split('"')[5])


def test_the_procfile_runs_the_five_long_lived_processes() -> None:
    entries = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.split()
    assert set(entries) == {*HTTP_SERVICES, *WORKERS}
    for name, command in entries.items():
        assert command == ["exec", "python", "-m", f"btc_orders.services.{name}"], name
        _module_runs(command[3])


@pytest.mark.parametrize("name", HTTP_SERVICES)
def test_gunicorn_binds_the_service_port_variable(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _gunicorn_settings(monkeypatch, BTC_ORDERS_SERVICE=name, **{PORT_VARIABLE[name]: "9123"})["bind"] == [
        "0.0.0.0:9123"
    ]
    assert _gunicorn_settings(monkeypatch, BTC_ORDERS_SERVICE=name)["bind"][0].endswith(
        {"create_buy_order": ":8777", "fetch_buy_orders": ":8778", "btc_price": ":8779"}[name]
    )


def test_gunicorn_workers_come_from_web_concurrency_but_btc_price_has_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _gunicorn_settings(monkeypatch, BTC_ORDERS_SERVICE="create_buy_order", WEB_CONCURRENCY="5")["workers"] == 5
    assert _gunicorn_settings(monkeypatch, BTC_ORDERS_SERVICE="fetch_buy_orders")["workers"] == 2
    assert _gunicorn_settings(monkeypatch, BTC_ORDERS_SERVICE="btc_price", WEB_CONCURRENCY="5")["workers"] == 1
    settings = _gunicorn_settings(monkeypatch, BTC_ORDERS_SERVICE="create_buy_order")
    assert settings["preload_app"] is False  # no DB pool or AMQP client crosses a fork
    assert settings["graceful_timeout"] < 30  # below the compose stop_grace_period
    assert settings["control_socket_disable"] is True


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({"BTC_ORDERS_SERVICE": "nope"}, "BTC_ORDERS_SERVICE"),
        ({"BTC_ORDERS_SERVICE": "create_buy_order", "WEB_CONCURRENCY": "many"}, "WEB_CONCURRENCY"),
        ({"BTC_ORDERS_SERVICE": "create_buy_order", "CREATE_BUY_ORDER_PORT": "0"}, "CREATE_BUY_ORDER_PORT"),
    ],
)
def test_gunicorn_conf_stops_with_one_line_naming_a_bad_variable(
    environment: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as stopped:
        _gunicorn_settings(monkeypatch, **environment)
    assert str(stopped.value).startswith(f"configuration error: {named}: ")


def test_gunicorn_knows_and_accepts_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # gunicorn silently ignores a name it does not know (a typo would go unnoticed): check each one,
    # and let gunicorn's own validators parse each value.
    from gunicorn.config import Config

    config = Config()
    settings = _gunicorn_settings(monkeypatch, BTC_ORDERS_SERVICE="create_buy_order", WEB_CONCURRENCY="3")
    public = {name: value for name, value in settings.items() if not name.startswith("_") and name != "os"}
    unknown = set(public) - set(config.settings)
    assert not unknown, f"gunicorn has no such setting: {unknown}"
    for name, value in public.items():
        config.set(name, value)
    assert config.workers == 3
    assert config.bind == ["0.0.0.0:8777"]
    assert config.worker_class_str == "uvicorn_worker.UvicornWorker"


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_healthcheck_probes_healthz_on_the_named_port(health_server: http.server.HTTPServer) -> None:
    port = str(health_server.server_address[1])
    assert run(sys.executable, str(HEALTHCHECK), "SOME_PORT", env={"SOME_PORT": port}).returncode == 0
    assert run(sys.executable, str(HEALTHCHECK), "SOME_PORT", port, env={}).returncode == 0  # the default port
    _Health.status = 500
    try:
        assert run(sys.executable, str(HEALTHCHECK), "SOME_PORT", env={"SOME_PORT": port}).returncode == 1
    finally:
        _Health.status = 200
    health_server.shutdown()
    health_server.server_close()
    assert run(sys.executable, str(HEALTHCHECK), "SOME_PORT", env={"SOME_PORT": port}).returncode == 1
    assert run(sys.executable, str(HEALTHCHECK), "UNSET_PORT", env={}).returncode == 1
    assert run(sys.executable, str(HEALTHCHECK), env={}).returncode == 2
