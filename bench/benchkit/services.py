"""The suite's processes for the benchmarks: gunicorn (docker/gunicorn.conf.py, as the images run
them) or `python -m btc_orders.services.<name>`, each in an empty temporary working directory (no
.env is read) with LOG_LEVEL=WARNING, leading a process group of its own (stop ends the workers too).

    procs = Processes()
    create = procs.gunicorn("create_buy_order", 2, {"WRITE_MODEL_DB_URL": ...})  # waits for /healthz
    sync = procs.module("read_model_sync", {...})                                # no HTTP: no wait
    cpu.group_cpu_seconds(create.pid), create.worker_pids(), create.url, create.log_text
    procs.stop(create); procs.stop_all()

Built on the launcher of the tests, tests.support.processes (codebase/tests/support/processes.py).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchkit import BENCH, REPO, cpu
from tests.support.processes import Launched, inherited_env, launch

GUNICORN_CONF = REPO / "docker" / "gunicorn.conf.py"
PORT_VARIABLES = {
    "btc_price": "BTC_PRICE_PORT",
    "create_buy_order": "CREATE_BUY_ORDER_PORT",
    "fetch_buy_orders": "FETCH_BUY_ORDERS_PORT",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    """A started benchmark process: the launcher's handle, its temporary directory, its URL if it serves HTTP."""

    launched: Launched
    workdir: tempfile.TemporaryDirectory[str]
    url: str | None = None
    description: str = ""

    @property
    def name(self) -> str:
        return self.launched.name

    @property
    def pid(self) -> int:
        """Also its process group's id."""
        return self.launched.pid

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.launched.process

    def running(self) -> bool:
        return self.launched.running()

    @property
    def log_text(self) -> str:
        return self.launched.logs(4000)

    def worker_pids(self) -> list[int]:
        return cpu.children(self.pid)

    def stop(self) -> None:
        self.launched.stop(timeout=25)
        self.workdir.cleanup()


class Processes:
    """Everything started, so that one `stop_all()` in a `finally` ends it all."""

    def __init__(self) -> None:
        self.running: list[Proc] = []

    def start(
        self, name: str, command: list[str], env: dict[str, str], url: str | None = None, ready_path: str = "/healthz"
    ) -> Proc:
        """Start `command`; with `url`, wait (60 s at most) until `url + ready_path` answers 200."""
        workdir = tempfile.TemporaryDirectory(prefix=f"bench_{name}_")
        full_env = inherited_env(**{"LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1", **env})  # env may set LOG_LEVEL
        log_path = Path(workdir.name) / "out.log"
        proc = Proc(launch(name, command, full_env, log_path, own_group=True), workdir, url)
        self.running.append(proc)
        if url:
            proc.launched.wait_http(url + ready_path, timeout=60, interval=0.2)
        return proc

    def module(self, service: str, env: dict[str, str], port: int | None = None) -> Proc:
        """`python -m btc_orders.services.<service>`; with `port` (set as its port variable), waits for /healthz."""
        extra = {PORT_VARIABLES[service]: str(port)} if port else {}
        url = f"http://127.0.0.1:{port}" if port else None
        proc = self.start(service, [sys.executable, "-m", f"btc_orders.services.{service}"], {**extra, **env}, url)
        proc.description = f"uvicorn, one process (python -m btc_orders.services.{service})"
        return proc

    def gunicorn(
        self, service: str, workers: int, env: dict[str, str], app: str | None = None, ready_path: str | None = None
    ) -> Proc:
        """`service` under gunicorn with docker/gunicorn.conf.py (the run images' command) and
        WEB_CONCURRENCY=`workers`; with `app` (e.g. "trivial_app:app", from bench/) that app instead of the
        service's, under the same settings. Ready when `ready_path` answers 200 (default /healthz, /ping for `app`)."""
        port = free_port()
        command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)] + ([app] if app else [])
        extra = {"PYTHONPATH": str(BENCH)} if app else {}
        full_env = {  # the arguments win over `env` (which may be a whole .env)
            **extra,
            **env,
            "BTC_ORDERS_SERVICE": service,
            PORT_VARIABLES[service]: str(port),
            "WEB_CONCURRENCY": str(workers),
        }
        name = "trivial" if app else service
        url = f"http://127.0.0.1:{port}"
        proc = self.start(name, command, full_env, url, ready_path=ready_path or ("/ping" if app else "/healthz"))
        proc.description = f"gunicorn, {workers} uvicorn workers"
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            try:
                proc.stop()
            except Exception as error:  # keep stopping the others
                print(f"could not stop {proc.name}: {error}", file=sys.stderr)
        self.running.clear()
