"""Configuration read from the files themselves: settings, .env, compose, SPEC and the images agree."""

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from btc_orders import settings
from tests.containers.conftest import PORT_VARIABLE, REPO, SPEC_PORTS, dotenv

SETTINGS_PY = REPO / "codebase" / "src" / "btc_orders" / "settings.py"

# Set in .env although no settings class reads it, and who reads it instead.
READ_ELSEWHERE = {
    "WEB_CONCURRENCY": REPO / "docker" / "gunicorn.conf.py",
    "PUBLISH_ADDRESS": REPO / "docker-compose.yml",
    "GATEWAY_RATE_LIMIT_PER_SECOND": REPO / "docker" / "gateway" / "templates" / "default.conf.template",
    "GATEWAY_RATE_LIMIT_BURST": REPO / "docker" / "gateway" / "templates" / "default.conf.template",
}


def _aliases_in_source() -> dict[str, bool]:
    """alias -> has a default, from the text of settings.py (every `Field(..., alias="X")`)."""
    found: dict[str, bool] = {}
    for match in re.finditer(r"Field\(([^()]*(?:\([^()]*\)[^()]*)*)\)", SETTINGS_PY.read_text()):
        arguments = match[1]
        alias = re.search(r'alias="([A-Z0-9_]+)"', arguments)
        if alias:
            has_default = bool(re.search(r"\bdefault(_factory)?=", arguments))
            found[alias[1]] = found.get(alias[1], False) or has_default
    return found


def _aliases_of_the_classes() -> dict[str, bool]:
    """alias -> has a default, from the settings classes themselves."""
    found: dict[str, bool] = {}
    for value in vars(settings).values():
        if isinstance(value, type) and issubclass(value, BaseSettings):
            for field in value.model_fields.values():
                if field.alias:
                    found[field.alias] = found.get(field.alias, False) or not field.is_required()
    return found


def test_the_source_and_the_classes_agree_on_what_is_read() -> None:
    assert _aliases_in_source().keys() == _aliases_of_the_classes().keys()
    assert len(_aliases_in_source()) >= 20


def test_every_variable_the_settings_read_is_in_dot_env_or_has_a_default() -> None:
    env_file = dotenv()
    for alias, has_default in _aliases_of_the_classes().items():
        assert has_default or alias in env_file, f"{alias} is required and .env does not set it"


def test_dot_env_sets_nothing_that_no_code_reads() -> None:
    read = set(_aliases_of_the_classes())
    for variable in dotenv():
        if variable in READ_ELSEWHERE:
            assert variable in READ_ELSEWHERE[variable].read_text(), variable
            continue
        assert variable in read, f".env sets {variable}, which no settings class reads"


def test_the_ports_agree_between_dot_env_settings_spec_and_images(compose_config: dict[str, Any]) -> None:
    env_file = dotenv()
    for variable, port in SPEC_PORTS.items():
        assert int(env_file[variable]) == port, variable
    defaults = {
        "CREATE_BUY_ORDER_PORT": settings.CreateBuyOrderSettings.model_fields["port"].default,
        "FETCH_BUY_ORDERS_PORT": settings.FetchBuyOrdersSettings.model_fields["port"].default,
        "BTC_PRICE_PORT": settings.BtcPriceSettings.model_fields["port"].default,
    }
    assert defaults == SPEC_PORTS
    gunicorn = (REPO / "docker" / "gunicorn.conf.py").read_text()
    for service, variable in PORT_VARIABLE.items():
        assert f'"{service}": ("{variable}", {SPEC_PORTS[variable]})' in gunicorn
        assert compose_config["services"][service]["expose"] == [str(SPEC_PORTS[variable])]
    assert env_file["BTC_PRICE_URL"].endswith(f":{SPEC_PORTS['BTC_PRICE_PORT']}")
    assert int(env_file["FLUENTD_PORT"]) == settings.BaseServiceSettings.model_fields["fluentd_port"].default


def test_the_spec_table_has_the_same_ports() -> None:
    spec = REPO.parent / "shared" / "SPEC.md"
    if not spec.is_file():
        pytest.skip(f"SPEC.md is not beside the repository ({spec}); the ports are checked against SPEC_PORTS")
    text = spec.read_text()
    for service, variable in PORT_VARIABLE.items():
        assert re.search(rf"\|\s*`{service}`\s*\|[^|]*\|\s*{SPEC_PORTS[variable]}\s*\|", text), service
    assert "`CREATE_BUY_ORDER_PORT`, `FETCH_BUY_ORDERS_PORT`, `BTC_PRICE_PORT` | 8777, 8778, 8779" in text


def test_the_local_defaults_of_run_sh_name_local_hosts() -> None:
    text = (REPO / "run.sh").read_text()
    for variable in ("WRITE_MODEL_DB_URL", "READ_MODEL_DB_URL", "AMQP_URL", "BTC_PRICE_URL"):
        default = re.search(rf'"\$\{{{variable}:=([^"]+)\}}"', text)
        assert default and "127.0.0.1" in default[1], variable
    assert '"${FLUENTD_HOST=}"' in text


def test_settings_load_from_dot_env_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The compose cluster's configuration is complete: every class loads from .env with nothing else set.
    for variable in [*_aliases_of_the_classes(), *READ_ELSEWHERE]:
        monkeypatch.delenv(variable, raising=False)
    (tmp_path / ".env").write_text((REPO / ".env").read_text())
    monkeypatch.chdir(tmp_path)
    for value in vars(settings).values():
        if isinstance(value, type) and issubclass(value, settings.BaseServiceSettings):
            value()
