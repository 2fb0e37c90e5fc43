# shellcheck shell=bash
# Sourced by the curl scripts: run curl, then print the status line and the JSON body readably.

# show_response CURL_ARGS...: prints "HTTP <status>" then the body (pretty when it is JSON).
show_response() {
    command -v curl >/dev/null 2>&1 || { echo "curl is needed (apt-get install curl)" >&2; exit 1; }
    local body status
    body=$(mktemp)
    # shellcheck disable=SC2064  # expand now: the path is fixed once made
    trap "rm -f '$body'" EXIT
    status=$(curl --silent --show-error --output "$body" --write-out '%{http_code}' "$@") || {
        echo "could not reach ${*: -1} (is the suite running? ./run.sh or ./run.sh --local)" >&2
        exit 1
    }
    echo "HTTP $status"
    if command -v python3 >/dev/null 2>&1 && python3 -m json.tool "$body" 2>/dev/null; then
        :
    else
        cat "$body"; echo
    fi
    case "$status" in 2??) return 0 ;; *) return 1 ;; esac
}
