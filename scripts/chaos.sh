#!/usr/bin/env bash
# The long chaos run of docs/reliability.md: the suite under load while faults are injected,
# then every invariant checked. Loopback only, throwaway databases and RabbitMQ vhost.
#   scripts/chaos.sh [--duration 600] [--seed 7] [--report FILE] [--logs DIR]
# Every fault kind once in a run under 300 s, twice from 300 s. Run as root (as in the development
# container): the blackhole faults drop packets with iptables; without it they only stall a proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
say() { printf '==> %s\n' "$*"; }
die() { printf 'chaos.sh: %s\n' "$*" >&2; exit 1; }
[ -x .venv/bin/python ] || die "no .venv yet: run ./test.sh once, it sets everything up"
export PATH="$root/.venv/bin:$PATH"
# shellcheck source=scripts/test_services.sh
source scripts/test_services.sh
ensure_postgres
ensure_rabbitmq
cd codebase
exec python -m tests.chaos "$@"
