"""Each container and each Procfile line starts an entry point that exists in the package."""

import http.server
import importlib
import importlib.util
import json
import runpy
import subprocess
import sys
import threading
import tomllib
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
PYPROJECT = tomllib.loads((REPO / "codebase" / "pyproject.toml").read_text())
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]


def _script_target(command: str) -> Any:
    """The function a console script of pyproject.toml runs."""
    assert command in SCRIPTS, f"{command} is not a console script of codebase/pyproject.toml"
    module, _, function = SCRIPTS[command].partition(":")
    return getattr(importlib.import_module(module), function)


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
        assert callable(_script_target(json.loads(command)[0]))


def test_every_process_type_and_the_admin_cli_has_a_console_script() -> None:
    assert set(SCRIPTS) == {"btc-orders-" + name.replace("_", "-") for name in PACKAGE_SERVICES} | {"btc-orders-admin"}
    for command, target in SCRIPTS.items():
        module = target.partition(":")[0]
        assert module.endswith(".__main__"), command  # the same code as `python -m`
        assert callable(_script_target(command)), command


def test_the_package_takes_its_dependencies_from_requirements_txt() -> None:
    assert PYPROJECT["project"]["dynamic"] == ["dependencies"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}


# Imports the modules named after "--" with every third-party module hidden whose distribution
# is not among those named before it: an optional import (httpx's CLI extras) fails quietly, as it
# would in the image; a needed one fails the import.
_IMPORT_WITH_ONLY = """
import importlib, importlib.abc, importlib.metadata, sys
split = sys.argv.index("--")
allowed_distributions, modules = set(sys.argv[1:split]), sys.argv[split + 1:]
owners = importlib.metadata.packages_distributions()
def normal(name): return name.lower().replace("_", "-").replace(".", "-")
hidden = {top for top, dists in owners.items() if not {normal(d) for d in dists} & allowed_distributions}
hidden -= set(sys.stdlib_module_names) | {"btc_orders"}
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the lock)", name=name)
        return None
sys.meta_path.insert(0, Hide())
for module in modules:
    importlib.import_module(module)
"""


@pytest.mark.parametrize("name", PACKAGE_SERVICES)
def test_a_process_imports_with_its_own_lock_alone(name: str) -> None:
    # Its image holds only requirements/<name>.lock: its entry point (and, for the migration image,
    # the admin CLI) must import with nothing else.
    modules = [f"btc_orders.services.{name}.__main__"]
    if name in HTTP_SERVICES:
        modules += ["btc_orders.asgi", "uvicorn_worker"]
    if name == "migration":
        modules.append("btc_orders.admin.__main__")
    lock = (REPO / "codebase" / "requirements" / f"{name}.lock").read_text().lower()
    locked = {
        line.split("==")[0].split("[")[0].replace("_", "-").replace(".", "-")
        for line in lock.splitlines()
        if "==" in line
    }
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_WITH_ONLY, *sorted(locked), "--", *modules],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, f"{name} needs more than requirements/{name}.lock: {result.stderr[-600:]}"


def test_the_procfile_runs_the_five_long_lived_processes() -> None:
    entries = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.split()
    assert set(entries) == {*HTTP_SERVICES, *WORKERS}
    for name, command in entries.items():
        assert command == ["exec", "btc-orders-" + name.replace("_", "-")], name
        assert callable(_script_target(command[1])), name
        _module_runs(SCRIPTS[command[1]].partition(":")[0].removesuffix(".__main__"))


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
