"""The shell scripts: shellcheck on every one, and the build and run scripts against a stub engine."""

import http.server
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
# A stand-in for docker/podman: logs each call; `info` answers unless STUB_NO_ENGINE is set;
# `image inspect` finds the images listed in $STUB_DIR/images; `build` records the tag and
# fails for the Dockerfile named by STUB_FAIL_ON; `compose version` works; `compose ...` logs.
echo "$*" >> "$STUB_DIR/calls"
case "$1" in
info) [ -z "${STUB_NO_ENGINE:-}" ] ;;
image) grep -qxF "$3" "$STUB_DIR/images" 2>/dev/null ;;
build)
    tag="" file=""
    while [ $# -gt 0 ]; do
        case "$1" in --tag) tag=$2; shift ;; --file) file=$2; shift ;; esac
        shift
    done
    [ -f "$file" ] || { echo "no such Dockerfile: $file" >&2; exit 1; }
    if [ -n "${STUB_FAIL_ON:-}" ] && [ "$file" = "$STUB_FAIL_ON" ]; then echo "stub: build failed" >&2; exit 1; fi
    echo "$tag" >> "$STUB_DIR/images"
    ;;
compose) exit 0 ;;
esac
"""


@pytest.fixture
def engine(tmp_path: Path) -> Path:
    """A directory holding a stub `docker` (and `podman`), first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("docker", "podman"):
        stub = bin_dir / name
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


def test_the_build_scripts_build_every_base_then_every_run_image(engine: Path) -> None:
    base = run(str(REPO / "build_base_images.sh"), env=_env(engine))
    assert base.returncode == 0, base.stderr
    built = run(str(REPO / "build_run_images.sh"), env=_env(engine))
    assert built.returncode == 0, built.stderr
    builds = [call for call in _calls(engine) if call.startswith("build ")]
    assert builds == [
        *(
            f"build --file docker/services/{name}/Dockerfile.base --tag btc-orders/{name}-base:latest ."
            for name in PACKAGE_SERVICES
        ),
        *(
            f"build --file docker/services/{name}/Dockerfile --tag btc-orders/{name}:latest ."
            for name in PACKAGE_SERVICES
        ),
    ]


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


def test_podman_builds_in_docker_format_and_no_engine_is_one_clear_line(engine: Path) -> None:
    result = run(str(REPO / "build_base_images.sh"), env=_env(engine, CONTAINER_ENGINE="podman"))
    assert result.returncode == 0, result.stderr
    assert all("--format docker" in call for call in _calls(engine) if call.startswith("build "))
    (engine / "bin" / "docker").unlink()
    (engine / "bin" / "podman").unlink()
    missing = run(str(REPO / "build_base_images.sh"), env=_env(engine))
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "build_base_images.sh: neither docker nor podman is installed (or set CONTAINER_ENGINE)"
    ]


def test_run_sh_without_an_engine_points_to_local(engine: Path) -> None:
    result = run(str(REPO / "run.sh"), env=_env(engine, STUB_NO_ENGINE="1"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "./run.sh --local" in lines[0] and "no container engine" in lines[0]
    assert not any(call.startswith(("build", "compose")) for call in _calls(engine))


class _Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/readyz" else 404)
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
    assert sum(call.startswith("build ") for call in calls) == 2 * len(PACKAGE_SERVICES)
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


def test_run_sh_rejects_an_unknown_option() -> None:
    result = run(str(REPO / "run.sh"), "--nope")
    assert result.returncode == 2
    assert "--local" in result.stderr
