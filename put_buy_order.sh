#!/usr/bin/env bash
# Place a buy order:  ./put_buy_order.sh [-i] [CURRENCY] [AMOUNT] [IDEMPOTENCE_KEY]
#   defaults: USD 123.45 and a fresh UUID; send the same key again to see the replay (200).
#   -i (or SHOW_HEADERS=1): show the response headers too (Location, Idempotent-Replayed, ...).
# Talks to http://localhost:$CREATE_BUY_ORDER_PORT (default 8777); exits non-zero unless 2xx.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/http_show.sh
source scripts/http_show.sh
if take_header_flag "$@"; then shift; fi

currency=${1:-USD}
amount=${2:-123.45}
if [ -n "${3:-}" ]; then
    key=$3
elif [ -r /proc/sys/kernel/random/uuid ]; then
    key=$(cat /proc/sys/kernel/random/uuid)
elif command -v uuidgen >/dev/null 2>&1; then
    key=$(uuidgen | tr '[:upper:]' '[:lower:]')
else
    key=$(python3 -c 'import uuid; print(uuid.uuid4())')
fi
url="http://localhost:${CREATE_BUY_ORDER_PORT:-8777}/buy_order"
body=$(printf '{"currency": "%s", "amount": "%s", "idempotence_key": "%s"}' "$currency" "$amount" "$key")

echo "PUT $url $body"
show_response --request PUT --header 'Content-Type: application/json' --data "$body" "$url"
