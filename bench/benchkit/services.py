"""The tree under test and its processes.

`Tree`: the checkout whose code runs (this repository, or another one for an A/B: `--src`): its
`codebase/src` first on every process's PYTHONPATH, its `docker/gunicorn.conf.py`, its `.env`, its
migrations and its interpreter (its own `.venv` if it has one, since two trees may pin different
drivers). `Processes`: gunicorn or `python -m btc_orders.services.<name>`, each in an empty
temporary working directory (no .env is read but what the run passes), leading its own process
group (stopping it stops its workers), all stopped by one `stop_all()`. Built on the launcher of
the tests, tests.support.processes (`launch`, `Launched`, `inherited_env`).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchkit import REPO
from tests.support.processes import Launched, inherited_env, launch

PORT_VARIABLES = {
    "btc_price": "BTC_PRICE_PORT",
    "create_buy_order": "CREATE_BUY_ORDER_PORT",
    "fetch_buy_orders": "FETCH_BUY_ORDERS_PORT",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Tree:
    root: Path
    python: str

    @classmethod
    def at(cls, root: str = "", python: str = "") -> Tree:
        """A checkout (default: this repository); its interpreter is `python`, else its `.venv`'s, else ours."""
        path = Path(root).resolve() if root else REPO
        if not (path / "codebase" / "src" / "btc_orders").is_dir():
            raise SystemExit(f"{path} is not a checkout of the project (no codebase/src/btc_orders)")
        own = path / ".venv" / "bin" / "python"
        return cls(path, python or (str(own) if own.exists() else sys.executable))

    def env(self, **extra: str) -> dict[str, str]:
        return inherited_env(PYTHONPATH=str(self.root / "codebase" / "src"), PYTHONUNBUFFERED="1", **extra)

    def dotenv(self, own: str = "") -> dict[str, str]:
        """The tree's .env, without the names matching the regular expression `own` (what the run sets)."""
        values = {}
        for line in (self.root / ".env").read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith("#") and not (own and re.search(own, name.strip())):
                values[name.strip()] = value.strip()
        return values

    def migrate(self, write_url: str, read_url: str) -> None:
        """`python -m btc_orders.services.migration` of the tree (both models)."""
        env = self.env(WRITE_MODEL_DB_URL=write_url, READ_MODEL_DB_URL=read_url, LOG_LEVEL="WARNING")
        done = subprocess.run(
            [self.python, "-m", "btc_orders.services.migration"], env=env, capture_output=True, text=True, check=False
        )
        if done.returncode:
            raise SystemExit(f"migration failed:\n{done.stdout}{done.stderr}")


@dataclass
class Proc:
    launched: Launched
    workdir: tempfile.TemporaryDirectory[str]
    url: str | None = None

    @property
    def name(self) -> str:
        return self.launched.name

    @property
    def pid(self) -> int:
        """Also its process group's id."""
        return self.launched.pid

    def running(self) -> bool:
        return self.launched.running()

    def stop(self) -> None:
        self.launched.stop(timeout=25)
        self.workdir.cleanup()


class Processes:
    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.running: list[Proc] = []

    def start(self, name: str, args: list[str], env: dict[str, str], url: str | None = None, ready: str = "") -> Proc:
        """`python <args>` of the tree; with `url`, wait (60 s at most) until `url + ready` answers 200."""
        workdir = tempfile.TemporaryDirectory(prefix=f"bench_{name}_")
        full_env = self.tree.env(**{"LOG_LEVEL": "WARNING", **env})
        launched = launch(name, [self.tree.python, *args], full_env, Path(workdir.name) / "out.log", own_group=True)
        proc = Proc(launched, workdir, url)
        self.running.append(proc)
        if url:
            launched.wait_http(url + (ready or "/healthz"), timeout=60, interval=0.2)
        return proc

    def module(self, service: str, env: dict[str, str], port: int | None = None) -> Proc:
        """`python -m btc_orders.services.<service>`; with `port` (its port variable), waits for /healthz."""
        extra = {PORT_VARIABLES[service]: str(port)} if port else {}
        url = f"http://127.0.0.1:{port}" if port else None
        return self.start(service, ["-m", f"btc_orders.services.{service}"], {**env, **extra}, url)

    def gunicorn(self, service: str, workers: int, env: dict[str, str], ready: str = "/readyz") -> Proc:
        """`service` under gunicorn with the tree's docker/gunicorn.conf.py (the run images' command)."""
        port = free_port()
        conf = str(self.tree.root / "docker" / "gunicorn.conf.py")
        extra = {"BTC_ORDERS_SERVICE": service, PORT_VARIABLES[service]: str(port), "WEB_CONCURRENCY": str(workers)}
        return self.start(service, ["-m", "gunicorn", "-c", conf], {**env, **extra}, f"http://127.0.0.1:{port}", ready)

    def stop_all(self) -> None:
        for proc in reversed(self.running):
            try:
                proc.stop()
            except Exception as error:  # keep stopping the others
                print(f"could not stop {proc.name}: {error}", file=sys.stderr)
        self.running.clear()
