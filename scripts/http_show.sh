# shellcheck shell=bash
# Sourced by the curl scripts: run curl, then print the status line and the JSON body readably.
# With SHOW_HEADERS=1 (or the scripts' -i flag) the response headers are printed too: Location,
# Idempotent-Replayed, Retry-After, Link, Preference-Applied, X-Request-ID.

# take_header_flag "$@": sets SHOW_HEADERS=1 when the first argument is -i; the caller then shifts.
take_header_flag() {
    if [ "${1:-}" = "-i" ]; then
        SHOW_HEADERS=1
        return 0
    fi
    return 1
}

# show_response CURL_ARGS...: prints "HTTP <status>", the headers when asked, then the body
# (pretty when it is JSON).
show_response() {
    command -v curl >/dev/null 2>&1 || { echo "curl is needed (apt-get install curl)" >&2; exit 1; }
    local body headers status
    body=$(mktemp)
    headers=$(mktemp)
    # shellcheck disable=SC2064  # expand now: the paths are fixed once made
    trap "rm -f '$body' '$headers'" EXIT
    status=$(curl --silent --show-error --dump-header "$headers" --output "$body" --write-out '%{http_code}' "$@") || {
        echo "could not reach ${*: -1} (is the suite running? ./run.sh or ./run.sh --local)" >&2
        exit 1
    }
    echo "HTTP $status"
    if [ "${SHOW_HEADERS:-}" = 1 ]; then
        # every header line but the status line, without the CR of HTTP's line endings
        tail -n +2 "$headers" | tr -d '\r' | sed '/^$/d'
        echo
    fi
    if command -v python3 >/dev/null 2>&1 && python3 -m json.tool "$body" 2>/dev/null; then
        :
    else
        cat "$body"; echo
    fi
    case "$status" in 2??) return 0 ;; *) return 1 ;; esac
}
