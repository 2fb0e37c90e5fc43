"""The shell scripts: shellcheck on every one, and the build and run scripts' own logic against a
stub engine (what they ask the engine, and their failure paths). The container stage of ./test.sh
runs the same scripts against the real engine (tests/cluster)."""

import http.server
import itertools
import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.containers.conftest import PACKAGE_SERVICES, REPO, run, tool

SCRIPTS = sorted(
    {
        *REPO.glob("*.sh"),
        REPO / ".ci" / "run",
        *(REPO / "scripts").glob("*.sh"),
        *(REPO / "docker").glob("*.sh"),
        *(REPO / "docker" / "local-images").glob("**/*.sh"),
        REPO / "docker" / "local-images" / "fluentd-standin" / "fluentd-standin-healthcheck",
    }
)
TOP_LEVEL = ("run.sh", "test.sh", "build_base_images.sh", "build_run_images.sh", "put_buy_order.sh", "get_buy_order.sh")


def test_the_required_scripts_exist_and_are_executable() -> None:
    for name in (*TOP_LEVEL, "get_buy_orders_pass_last_ref.sh", ".ci/run"):
        path = REPO / name
        assert path.is_file(), name
        assert path.stat().st_mode & stat.S_IXUSR, f"{name} is not executable"
        assert path.read_text().startswith("#!/usr/bin/env bash\n"), name


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: str(path.relative_to(REPO)))
def test_shellcheck_finds_nothing(script: Path) -> None:
    # From the repository root, following `source` lines (-x), every severity down to style.
    result = run(tool("shellcheck"), "--external-sources", "--severity=style", str(script.relative_to(REPO)))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: str(path.relative_to(REPO)))
def test_bash_parses_it_and_every_disabled_check_says_why(script: Path) -> None:
    assert run("bash", "-n", str(script)).returncode == 0
    lines = script.read_text().splitlines()
    for number, line in enumerate(lines):
        if "shellcheck disable=" in line:
            reason_after = re.search(r"disable=[\w,]+\s+#\s*\S", line)
            above = lines[number - 1].strip() if number else ""
            assert reason_after or (above.startswith("#") and "shellcheck" not in above), (
                f"{script.name}:{number + 1}: a disabled check without a reason"
            )


# --- build scripts and run.sh against a stub engine ----------------------------------------------

STUB = r"""#!/usr/bin/env bash
# A stand-in for docker: logs each call; `info` answers unless STUB_NO_ENGINE is set;
# `image inspect` finds the images listed in $STUB_DIR/images; `build` records its tags and
# fails for the Dockerfile named by STUB_FAIL_ON; `compose version` works, `compose ps` of an
# unknown service fails (as a real compose does), `compose ...` logs.
echo "$*" >> "$STUB_DIR/calls"
case "$1" in
info) [ -z "${STUB_NO_ENGINE:-}" ] ;;
image) grep -qxF "$3" "$STUB_DIR/images" 2>/dev/null ;;
build)
    tags=() file=""
    while [ $# -gt 0 ]; do
        case "$1" in --tag) tags+=("$2"); shift ;; --file) file=$2; shift ;; esac
        shift
    done
    [ -f "$file" ] || { echo "no such Dockerfile: $file" >&2; exit 1; }
    if [ -n "${STUB_FAIL_ON:-}" ] && [ "$file" = "$STUB_FAIL_ON" ]; then echo "stub: build failed" >&2; exit 1; fi
    printf '%s\n' "${tags[@]}" >> "$STUB_DIR/images"
    ;;
compose) [ "$2 $3" != "ps no-such-service" ] ;;
esac
"""


@pytest.fixture
def engine(tmp_path: Path) -> Path:
    """A directory holding a stub `docker`, first on PATH (ahead of any real one)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "docker"
    stub.write_text(STUB)
    stub.chmod(0o755)
    (tmp_path / "images").touch()
    return tmp_path


def _env(engine: Path, **extra: str) -> dict[str, str]:
    env = {"PATH": f"{engine / 'bin'}:/usr/bin:/bin", "HOME": str(engine), "STUB_DIR": str(engine)}
    env.update(extra)
    return env


def _calls(engine: Path) -> list[str]:
    path = engine / "calls"
    return path.read_text().splitlines() if path.exists() else []


def _builds(engine: Path) -> list[tuple[str, list[str], dict[str, str], list[str]]]:
    """(Dockerfile, tags, labels, build args) of every build call, in order."""
    found = []
    for call in _calls(engine):
        words = call.split()
        if words[0] != "build":
            continue
        pairs = list(itertools.pairwise(words))
        dockerfile = next(value for flag, value in pairs if flag == "--file")
        tags = [value for flag, value in pairs if flag == "--tag"]
        labels = dict(value.split("=", 1) for flag, value in pairs if flag == "--label")
        arguments = [value for flag, value in pairs if flag == "--build-arg"]
        found.append((dockerfile, tags, labels, arguments))
    return found


def test_the_build_scripts_build_every_base_then_every_run_image_tagged_for_release(engine: Path) -> None:
    base = run(str(REPO / "build_base_images.sh"), env=_env(engine, PYTHON_IMAGE="example/python:3.13"))
    assert base.returncode == 0, base.stderr
    built = run(str(REPO / "build_run_images.sh"), env=_env(engine))
    assert built.returncode == 0, built.stderr
    builds = _builds(engine)
    expected = [f"docker/services/{name}/Dockerfile.base" for name in PACKAGE_SERVICES]
    expected += [f"docker/services/{name}/Dockerfile" for name in PACKAGE_SERVICES]
    assert [dockerfile for dockerfile, *_ in builds] == expected
    commit = run("git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD").stdout.strip()
    for dockerfile, tags, labels, arguments in builds:
        repository = tags[0].removesuffix(":latest")
        assert tags[0].endswith(":latest")
        assert tags[1] == f"{repository}:1.0.0"
        assert tags[2].startswith(f"{repository}:{commit}")
        assert labels["org.opencontainers.image.version"] == "1.0.0"
        assert labels["org.opencontainers.image.revision"].startswith(commit)
        assert {"org.opencontainers.image.created", "org.opencontainers.image.source"} <= labels.keys()
        if dockerfile.endswith(".base"):
            assert arguments == ["PYTHON_IMAGE=example/python:3.13"]
            assert labels["org.opencontainers.image.base.name"] == "example/python:3.13"


def test_the_build_stops_at_the_first_failure_and_names_it(engine: Path) -> None:
    failing = "docker/services/create_buy_order/Dockerfile.base"
    result = run(str(REPO / "build_base_images.sh"), env=_env(engine, STUB_FAIL_ON=failing))
    assert result.returncode == 1
    assert f"building btc-orders/create_buy_order-base:latest from {failing} failed" in result.stderr
    assert sum(call.startswith("build ") for call in _calls(engine)) == 2  # btc_price, then the failure


def test_run_images_need_their_bases(engine: Path) -> None:
    result = run(str(REPO / "build_run_images.sh"), env=_env(engine))
    assert result.returncode == 1
    assert "run ./build_base_images.sh first" in result.stderr
    assert not any(call.startswith("build ") for call in _calls(engine))


def test_no_engine_is_one_clear_line(engine: Path) -> None:
    missing = run(str(REPO / "build_base_images.sh"), env=_env(engine, STUB_NO_ENGINE="1"))
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "build_base_images.sh: docker cannot reach its engine ('docker info' fails): start the Docker daemon first"
    ]
    assert not any(call.startswith("build ") for call in _calls(engine))


# A Postgres URL nothing answers: the local run stops at its first check, before starting anything.
_DEAD_POSTGRES = "postgresql://postgres@127.0.0.1:1/btc_write_model"


def test_run_sh_without_an_engine_says_so_and_runs_without_containers(engine: Path) -> None:
    env = _env(engine, STUB_NO_ENGINE="1", WRITE_MODEL_DB_URL=_DEAD_POSTGRES)
    result = run(str(REPO / "run.sh"), env=env)
    assert result.returncode != 0
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "==> no Docker engine answers ('docker info'): running the processes without containers (./run.sh --local)"
    )
    assert "no Postgres answers at 127.0.0.1:1 for WRITE_MODEL_DB_URL" in result.stderr
    assert not any(call.startswith(("build", "compose", "pull")) for call in _calls(engine))


def test_run_sh_build_without_an_engine_is_one_clear_line(engine: Path) -> None:
    result = run(str(REPO / "run.sh"), "--build", env=_env(engine, STUB_NO_ENGINE="1"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "./run.sh --local" in lines[0] and "no Docker engine" in lines[0]


def test_run_sh_masks_every_url_of_a_list_it_prints(engine: Path) -> None:
    amqp = "amqp://guest:first-secret@127.0.0.1:5672/%2F;amqp://relay:second-secret@broker2:5672/%2F"
    env = _env(engine, WRITE_MODEL_DB_URL="postgresql://btc:db-secret@127.0.0.1:1/w", AMQP_URL=amqp)
    result = run(str(REPO / "run.sh"), "--local", env=env)
    printed = result.stdout + result.stderr
    for secret in ("first-secret", "second-secret", "db-secret"):
        assert secret not in printed
    assert "==> queue:       amqp://guest:***@127.0.0.1:5672/%2F;amqp://relay:***@broker2:5672/%2F" in printed
    assert "==> write model: postgresql://btc:***@127.0.0.1:1/w" in printed


@pytest.mark.parametrize(
    ("urls", "masked"),
    [
        (
            "amqp://guest:guest@h1:5672/%2F;amqp://u:p%40ss@h2/v?x=1;amqp://h3",
            "amqp://guest:***@h1:5672/%2F;amqp://u:***@h2/v?x=1;amqp://h3",
        ),
        ("postgresql://postgres@127.0.0.1:5432/x", "postgresql://postgres@127.0.0.1:5432/x"),
        (
            "postgresql://a:b@db1:5432,db2:5432/btc?target_session_attrs=read-write",
            "postgresql://a:***@db1:5432,db2:5432/btc?target_session_attrs=read-write",
        ),
        ("http://127.0.0.1:8780", "http://127.0.0.1:8780"),
    ],
)
def test_mask_urls_masks_each_element_of_a_list(urls: str, masked: str) -> None:
    result = run("bash", "-c", 'source scripts/urls.sh && mask_urls "$1"', "mask", urls)
    assert result.returncode == 0, result.stderr
    assert result.stdout == masked


class _Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        # The public reads run.sh waits for through the gateway.
        self.send_response(200 if self.path in ("/capacity", "/buy_orders?page_size=1") else 404)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def ready_port() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_run_sh_builds_what_is_missing_starts_the_cluster_and_prints_the_urls(engine: Path, ready_port: int) -> None:
    port = str(ready_port)
    env = _env(engine, CREATE_BUY_ORDER_PORT=port, FETCH_BUY_ORDERS_PORT=port)
    env["PATH"] += ":" + os.environ.get("PATH", "")  # curl or python3 for the readiness probe
    result = run(str(REPO / "run.sh"), env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = _calls(engine)
    assert len(_builds(engine)) == 2 * len(PACKAGE_SERVICES)
    assert "compose up -d --remove-orphans" in calls
    assert f"http://localhost:{port}/buy_order" in result.stdout
    assert f"http://localhost:{port}/docs" in result.stdout

    # A second start builds nothing: the images are there.
    (engine / "calls").unlink()
    again = run(str(REPO / "run.sh"), env=env, timeout=60)
    assert again.returncode == 0, again.stderr
    assert not any(call.startswith("build ") for call in _calls(engine))

    stopped = run(str(REPO / "run.sh"), "--stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert _calls(engine)[-1] == "compose down --remove-orphans"


def test_run_sh_offline_adds_the_fake_coinbase_and_says_prices_are_not_real(engine: Path, ready_port: int) -> None:
    port = str(ready_port)
    env = _env(engine, CREATE_BUY_ORDER_PORT=port, FETCH_BUY_ORDERS_PORT=port)
    env["PATH"] += ":" + os.environ.get("PATH", "")
    result = run(str(REPO / "run.sh"), "--offline", env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    builds = [dockerfile for dockerfile, *_ in _builds(engine)]
    assert builds[-1] == "codebase/tests/cluster/coinbase/Dockerfile"
    assert "OFFLINE: PRICES ARE NOT REAL" in result.stdout
    assert "Coinbase cannot be reached" not in result.stdout


def test_run_sh_says_once_when_coinbase_cannot_be_reached(engine: Path, ready_port: int) -> None:
    port = str(ready_port)
    env = _env(engine, CREATE_BUY_ORDER_PORT=port, FETCH_BUY_ORDERS_PORT=port, COINBASE_API_URL="http://127.0.0.1:1")
    env["PATH"] += ":" + os.environ.get("PATH", "")
    result = run(str(REPO / "run.sh"), env=env, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if "Coinbase cannot be reached" in line]
    assert len(lines) == 1 and "./run.sh --offline" in lines[0]
    assert "PRICES ARE NOT REAL" not in result.stdout


def test_run_sh_rejects_an_unknown_option() -> None:
    result = run(str(REPO / "run.sh"), "--nope")
    assert result.returncode == 2
    assert "--local" in result.stderr
