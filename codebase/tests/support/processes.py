"""The one process launcher of the tests and the benchmarks: start a command with its output in a
log file and a working directory of its own, wait for it to answer HTTP, stop it (the whole process
group when it leads one), read its log.

Used by tests/support/services.py (the suite's processes in the e2e tests) and by bench/benchkit
(which puts codebase/ on sys.path and imports this module as `tests.support.processes`). Standard
library and httpx only, so that both can import it without the other's fixtures.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# What a started process inherits from ours; everything else is set explicitly by the caller.
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")


def inherited_env(**overrides: str) -> dict[str, str]:
    """Our PATH, HOME and locale, plus `overrides`: a process sees only what it is given."""
    env = {key: value for key, value in os.environ.items() if key in INHERITED}
    env.update(overrides)
    return env


class LaunchError(RuntimeError):
    """The process exited, or did not answer, while it was being waited for (message: its log's tail)."""


@dataclass
class Launched:
    """A started command. With `own_group` it leads a process group of its own (a new session), and
    stop/kill signal the whole group (gunicorn's workers too); otherwise only the process itself."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    own_group: bool = False
    _log_tail: int = field(default=3000, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def logs(self, tail: int | None = None) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace")
            return text[-tail:] if tail else text
        return ""

    def send(self, signum: int) -> None:
        if not self.running():
            return
        with contextlib.suppress(ProcessLookupError):
            if self.own_group:
                os.killpg(self.process.pid, signum)
            else:
                self.process.send_signal(signum)

    def kill(self, timeout: float = 10) -> None:
        if self.running():
            self.send(signal.SIGKILL)
            self.process.wait(timeout)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        if self.running():
            self.send(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def wait_http(self, url: str, timeout: float = 20, interval: float = 0.05) -> None:
        """Until `url` answers 200; LaunchError with the log's tail if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise LaunchError(f"{self.name} exited with {self.process.returncode}:\n{self.logs(self._log_tail)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1, trust_env=False).status_code == 200:
                    return
            if time.monotonic() > deadline:
                tail = self.logs(self._log_tail)
                raise LaunchError(f"{self.name} did not answer {url} within {timeout:g} s:\n{tail}")
            time.sleep(interval)


def launch(
    name: str,
    command: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    own_group: bool = False,
) -> Launched:
    """Start `command` with exactly `env`, stdout and stderr appended to `log_path`, in `cwd` (default:
    the log's folder; give one without a .env file, as the services would read it)."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd or log_path.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=own_group,
        )
    return Launched(name, process, log_path, own_group)
