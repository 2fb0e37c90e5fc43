# shellcheck shell=bash
# Sourced by build_base_images.sh and build_run_images.sh: the services, the image
# names, and the container engine (docker or podman; CONTAINER_ENGINE overrides).

# shellcheck disable=SC2034  # SERVICES and the functions are used by the scripts that source this file
SERVICES=(btc_price create_buy_order fetch_buy_orders outbox_relay read_model_sync migration)
# The names docker-compose.yml and every Dockerfile's FROM line use.
base_image() { printf 'btc-orders/%s-base:latest' "$1"; }
run_image() { printf 'btc-orders/%s:latest' "$1"; }

fail() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

pick_engine() {
    if [ -n "${CONTAINER_ENGINE:-}" ]; then
        command -v "$CONTAINER_ENGINE" >/dev/null 2>&1 || fail "CONTAINER_ENGINE=$CONTAINER_ENGINE is not on PATH"
        ENGINE=$CONTAINER_ENGINE
    elif command -v docker >/dev/null 2>&1; then
        ENGINE=docker
    elif command -v podman >/dev/null 2>&1; then
        ENGINE=podman
    else
        fail "neither docker nor podman is installed (or set CONTAINER_ENGINE)"
    fi
    "$ENGINE" info >/dev/null 2>&1 || fail "$ENGINE cannot reach its engine ('$ENGINE info' fails): start it first"
}

# build IMAGE DOCKERFILE: build from the repository root (the context .dockerignore trims).
build() {
    local image=$1 dockerfile=$2 format=()
    # podman writes OCI images by default, which drop HEALTHCHECK and STOPSIGNAL: ask for Docker's format.
    if [ "$(basename "$ENGINE")" = podman ]; then format=(--format docker); fi
    printf '==> building %s (%s)\n' "$image" "$dockerfile"
    "$ENGINE" build ${format[@]+"${format[@]}"} --file "$dockerfile" --tag "$image" . ||
        fail "building $image from $dockerfile failed (see the output above); stopped at the first error"
}
