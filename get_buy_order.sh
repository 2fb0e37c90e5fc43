#!/usr/bin/env bash
# The first page of buy orders, newest first:  ./get_buy_order.sh [-i] [PAGE_SIZE] [PARAM=VALUE...]
#   PAGE_SIZE defaults to 10; PARAM=VALUE are more query parameters, e.g. currency=USD
#   created_gte=2026-11-24T00:00:00Z; -i (or SHOW_HEADERS=1) shows the headers (Link, X-Request-ID).
# The next page: ./get_buy_orders_pass_last_ref.sh <last_reference of this page> [PAGE_SIZE].
# Talks to http://localhost:$FETCH_BUY_ORDERS_PORT (default 8778); exits non-zero unless 2xx.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/http_show.sh
source scripts/http_show.sh
if take_header_flag "$@"; then shift; fi

url="http://localhost:${FETCH_BUY_ORDERS_PORT:-8778}/buy_orders?page_size=${1:-10}"
for parameter in "${@:2}"; do url="$url&$parameter"; done
echo "GET $url"
show_response "$url"
