"""A py-spy profile of a service under wrk load: own and inclusive time per frame, and its tables.

`py-spy record --subprocesses --nonblocking` on the gunicorn master (so every worker), raw collapsed
stacks, summarised here. Needs py-spy in the venv (bench/run_all.sh installs py-spy==0.4.3)."""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit.load import wrk
from benchkit.services import Proc


def profile_summary(raw_path: Path, top: int = 15) -> tuple[list[tuple[str, float]], list[tuple[str, float]], int]:
    """From py-spy's collapsed stacks: the top frames by own samples and by inclusive samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [simplify_frame(frame) for frame in stack.split(";")]
        frames = [frame for frame in frames if frame]
        if not frames:
            continue
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return [], [], 0
    return (
        [(name, 100 * n / total) for name, n in own.most_common(top)],
        [(name, 100 * n / total) for name, n in inclusive.most_common(top * 3)],
        total,
    )


def simplify_frame(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (pkg/file.py)"
    if frame.startswith("process ") or frame.startswith("thread "):
        return ""
    match = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame.strip()
    function, path = match.groups()
    if path.startswith("process ") or function.startswith("process "):
        return ""
    path = re.sub(r".*/site-packages/", "", path)
    path = re.sub(r".*/src/btc_orders/", "btc_orders/", path)
    path = re.sub(r".*/lib/python3\.\d+/", "stdlib/", path)
    return f"{function} ({path})"


def profile(proc: Proc, url: str, script: str, clients: int, seconds: float, *script_args: str) -> dict[str, Any]:
    """py-spy on every worker (via the gunicorn master) during one wrk run, after a warm-up."""
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        return {"error": "py-spy not installed (pip install py-spy==0.4.3)"}
    seconds = max(5, seconds)
    wrk("warm-up", url, 8, 3, script, *script_args)  # before the profile starts
    raw = Path(tempfile.mkdtemp(prefix="bench_pyspy_")) / "profile.txt"
    spy = subprocess.Popen(
        [str(py_spy), "record", "--subprocesses", "-p", str(proc.pid), "-d", str(int(seconds) + 2),
         "-r", "200", "--format", "raw", "-o", str(raw), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    time.sleep(1)
    label = f"{proc.name} {len(proc.worker_pids())}w under py-spy"
    run = wrk(label, url, clients, seconds, script, *script_args)
    try:
        spy.wait(timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
    if not raw.exists():
        return {"error": f"py-spy wrote nothing: {spy.stderr.read().decode()[-500:] if spy.stderr else ''}"}
    own, inclusive, samples = profile_summary(raw)
    shutil.rmtree(raw.parent, ignore_errors=True)
    return {"own": own, "inclusive": inclusive, "samples": samples, "rate": run.ok_rate, "clients": clients}


PROFILE_INTERESTING = re.compile(
    r"place|_place_once|_take_from|rate \(|execute|commit|begin|connect|do_execute|json|jsonable|serialize|"
    r"validate|run_in_threadpool|run_sync|created_event|logs|event \(|metrics|inc \(|uuid4|middleware|"
    r"request_response|solve_dependencies|send|receive|_fetch|cursor|Decimal|bitcoin_satoshis|page|resource|"
    r"fetchall|_row|process_rows|dumps|get_buy_orders|read_model|Condition.wait|Runner.run|_checkout|_do_get"
)


def profile_markdown(what: str, prof: dict[str, Any]) -> str:
    """The profile's paragraph and its two tables (own time, inclusive time of the frames of interest)."""
    lines: list[str] = []
    w = lines.append
    if "error" in prof:
        return f"No profile of {what}: {prof['error']}\n"
    w(
        f"**{what[0].upper() + what[1:]}**: `py-spy record --subprocesses --nonblocking -r 200` on the gunicorn "
        f"master during a {prof['clients']}-client wrk run ({prof['rate']:,.0f} req/s under the profiler), "
        f"{prof['samples']:,} samples of active (non-idle) Python threads across the workers. Own time is the frame "
        "on top of the stack; inclusive time counts the frame and everything it calls."
    )
    w("")
    w("| own share | frame |")
    w("|---:|---|")
    for name, share in prof["own"]:
        w(f"| {share:.1f}% | `{name}` |")
    w("")
    w("| inclusive share | frame |")
    w("|---:|---|")
    shown = 0
    for name, share in prof["inclusive"]:
        if PROFILE_INTERESTING.search(name) and shown < 25:
            w(f"| {share:.1f}% | `{name}` |")
            shown += 1
    return "\n".join(lines) + "\n"
