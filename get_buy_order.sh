#!/usr/bin/env bash
# The first page of buy orders, newest first:  ./get_buy_order.sh [PAGE_SIZE]   (default 10)
# The next page: ./get_buy_orders_pass_last_ref.sh <last_reference of this page> [PAGE_SIZE].
# Talks to http://localhost:$FETCH_BUY_ORDERS_PORT (default 8778); exits non-zero unless 2xx.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/http_show.sh
source scripts/http_show.sh

url="http://localhost:${FETCH_BUY_ORDERS_PORT:-8778}/buy_orders?page_size=${1:-10}"
echo "GET $url"
show_response "$url"
