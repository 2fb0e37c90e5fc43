#!/usr/bin/env bash
# The whole-pipeline benchmark with the repository's venv: bench/pipeline.sh [--quick] [pipeline.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/venv.sh
exec "$PY" bench/pipeline.py "$@"
