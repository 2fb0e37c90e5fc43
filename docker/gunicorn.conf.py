"""Gunicorn settings for the HTTP services' run images (uvicorn workers).

Everything comes from the environment (12-factor): the image sets BTC_ORDERS_SERVICE,
the port comes from that service's own variable (`.env`: CREATE_BUY_ORDER_PORT,
FETCH_BUY_ORDERS_PORT, BTC_PRICE_PORT) and the worker count from WEB_CONCURRENCY.
btc_price always runs exactly one worker: its rate cache and the coalescing of
concurrent Coinbase calls live in the process, so more workers mean more upstream calls.
"""

import os
import tempfile as _tempfile
from typing import Any as _Any

_PORTS = {
    "btc_price": ("BTC_PRICE_PORT", 8779),
    "create_buy_order": ("CREATE_BUY_ORDER_PORT", 8777),
    "fetch_buy_orders": ("FETCH_BUY_ORDERS_PORT", 8778),
}
_SINGLE_PROCESS = {"btc_price"}
_DEFAULT_WORKERS = 2

_service = os.environ.get("BTC_ORDERS_SERVICE", "")
if _service not in _PORTS:
    raise SystemExit(f"configuration error: BTC_ORDERS_SERVICE: must be one of {', '.join(sorted(_PORTS))}")
_port_variable, _default_port = _PORTS[_service]


def _integer(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"configuration error: {name}: must be an integer") from None
    if not low <= value <= high:
        raise SystemExit(f"configuration error: {name}: must be between {low} and {high}")
    return value


_port = _integer(_port_variable, _default_port, 1, 65535)
wsgi_app = f"btc_orders.asgi:{_service}()"
bind = [f"0.0.0.0:{_port}"]
worker_class = "uvicorn_worker.UvicornWorker"
workers = 1 if _service in _SINGLE_PROCESS else _integer("WEB_CONCURRENCY", _DEFAULT_WORKERS, 1, 64)
preload_app = False  # each worker builds its own app: DB pools and clients are never shared across fork
proc_name = _service

# Shutdown: `docker stop` sends SIGTERM to gunicorn (PID 1 or under `init: true`), which stops
# accepting, lets in-flight requests finish for up to graceful_timeout, then exits; keep this
# below the compose stop_grace_period so the final SIGKILL never lands first.
graceful_timeout = 20
timeout = 30
keepalive = 5

# Containers: heartbeat files in memory, no control socket (nobody runs gunicornc in there),
# the app writes its own JSON logs; gunicorn's own lines go to stderr.
worker_tmp_dir = "/dev/shm"
control_socket_disable = True
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "INFO").lower()
forwarded_allow_ips = "*"  # only the gateway and other cluster members can reach these ports

# Prometheus multiprocess mode: every worker writes its figures under one folder, and
# /metrics adds them up (btc_orders/metrics.py). Set before the workers start.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _tempfile.mkdtemp(prefix="prometheus-")


def on_starting(_server: _Any) -> None:
    # A port in use: one line naming the variable and a non-zero exit, before gunicorn's own
    # bind (which retries for 5 s, then exits with lines that name no variable).
    from btc_orders.services.startup import StartupFailure, refuse_to_start
    from btc_orders.services.startup import bind as bind_port

    try:
        bind_port(_port, _port_variable).close()
    except StartupFailure as error:
        refuse_to_start(str(error))

    # A folder that outlived an earlier gunicorn (a container restarted in its pod) holds files
    # of dead workers whose pids may come again: start from an empty one.
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.remove(os.path.join(folder, name))


def child_exit(_server: _Any, worker: _Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
