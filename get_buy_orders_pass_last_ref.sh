#!/usr/bin/env bash
# The page after LAST_REF:  ./get_buy_orders_pass_last_ref.sh [-i] LAST_REF [PAGE_SIZE] [PARAM=VALUE...]
# LAST_REF is the "last_reference" of the previous page (./get_buy_order.sh prints it); PAGE_SIZE
# defaults to 10; PARAM=VALUE are more query parameters (the previous page's filters, e.g.
# currency=USD); -i (or SHOW_HEADERS=1) shows the headers (the Link header names both neighbours).
# Talks to http://localhost:$FETCH_BUY_ORDERS_PORT (default 8778); exits non-zero unless 2xx.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=scripts/http_show.sh
source scripts/http_show.sh
if take_header_flag "$@"; then shift; fi

if [ -z "${1:-}" ]; then
    echo "usage: $0 [-i] LAST_REF [PAGE_SIZE] [PARAM=VALUE...]   (LAST_REF: the last_reference of the previous page)" >&2
    exit 2
fi
url="http://localhost:${FETCH_BUY_ORDERS_PORT:-8778}/buy_orders?page_size=${2:-10}&last_reference=$1"
for parameter in "${@:3}"; do url="$url&$parameter"; done
echo "GET $url"
show_response "$url"
