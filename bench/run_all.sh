#!/usr/bin/env bash
# The whole benchmark suite, one command: bench/run_all.sh [--quick] [suite.py options]
#   --quick   a few minutes (4 s per point, 20,000 drain events, paging on 100,000 orders)
#   (full)    about 15 minutes (10 s per point, 100,000 drain events, paging on 1,000,000 orders)
# Loopback only; writes docs/benchmarks.md and docs/img/bench_*.png (see bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/venv.sh
if [[ ! -x .venv/bin/py-spy ]]; then
    echo "installing py-spy into .venv (the create-path profile)" >&2
    "$PY" -m pip install --quiet py-spy==0.4.3 || echo "py-spy unavailable: the report will have no profile" >&2
fi
if ! command -v wrk >/dev/null; then
    echo "installing wrk (apt-get)" >&2
    if [[ $(id -u) == 0 ]]; then apt-get update -qq && apt-get install -y -qq wrk >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq wrk >/dev/null; fi
fi
for tool in pgbench rabbitmqctl; do
    if ! command -v $tool >/dev/null && [[ ! -x /usr/lib/postgresql/15/bin/$tool ]]; then
        echo "$tool not found" >&2; exit 2
    fi
done
exec "$PY" bench/suite.py "$@"
