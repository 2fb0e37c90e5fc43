#!/usr/bin/env bash
# The page after LAST_REF:  ./get_buy_orders_pass_last_ref.sh LAST_REF [PAGE_SIZE]   (default 10)
# LAST_REF is the "last_reference" of the previous page (./get_buy_order.sh prints it).
# Talks to http://localhost:$FETCH_BUY_ORDERS_PORT (default 8778); exits non-zero unless 2xx.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/http_show.sh
source scripts/http_show.sh

if [ -z "${1:-}" ]; then
    echo "usage: $0 LAST_REF [PAGE_SIZE]   (LAST_REF: the last_reference of the previous page)" >&2
    exit 2
fi
url="http://localhost:${FETCH_BUY_ORDERS_PORT:-8778}/buy_orders?page_size=${2:-10}&last_reference=$1"
echo "GET $url"
show_response "$url"
