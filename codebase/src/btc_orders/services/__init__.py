"""One package per process type; each is started by its own entry point.

HTTP services run as `python -m btc_orders.services.<name>` (uvicorn, one process) or under
gunicorn with uvicorn workers via `btc_orders.asgi`; workers run as `python -m` too. What they
share to start is `startup` (settings, one-line failures, `serve`, `run_worker`); what the
workers share to run is `worker`.
"""
