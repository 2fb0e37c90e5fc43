# shellcheck shell=bash
# Sourced by build_base_images.sh and build_run_images.sh: the services, the image names
# and tags, the release labels, and the engine (Docker: `docker info` must answer).

# shellcheck disable=SC2034  # SERVICES and the functions are used by the scripts that source this file
SERVICES=(btc_price create_buy_order fetch_buy_orders outbox_relay read_model_sync migration)
# The names docker-compose.yml and every Dockerfile's FROM line use (:latest), plus the
# release tags every build also gets: the project version and the git commit.
base_image() { printf 'btc-orders/%s-base:latest' "$1"; }
run_image() { printf 'btc-orders/%s:latest' "$1"; }

# The upstream image the bases start from: an attached resource, the official image by default
# (a machine without registry access points it at a local equivalent, docs/containers.md).
PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.13-slim-trixie}

fail() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

pick_engine() {
    command -v docker >/dev/null 2>&1 || fail "docker is not installed (see docs/containers.md)"
    docker info >/dev/null 2>&1 || fail "docker cannot reach its engine ('docker info' fails): start the Docker daemon first"
    ENGINE=docker
}

# The release identity of this checkout: version from pyproject.toml, the commit (with
# -dirty when the work tree has uncommitted changes), the build time.
release_identity() {
    VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' codebase/pyproject.toml | head -n 1)
    [ -n "$VERSION" ] || fail "no version in codebase/pyproject.toml"
    REVISION=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
    if [ "$REVISION" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        REVISION="$REVISION-dirty"
    fi
    CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    SOURCE=${IMAGE_SOURCE:-https://github.com/btc-orders/btc-orders}
}

# build IMAGE DOCKERFILE [BUILD ARGUMENT...]: build from the repository root (the context
# .dockerignore trims), tagged :latest, :<version> and :<commit>, with the release's OCI labels.
build() {
    local image=$1 dockerfile=$2 repository=${1%:*}
    shift 2
    [ -n "${VERSION:-}" ] || release_identity
    printf '==> building %s (%s, %s, %s)\n' "$image" "$dockerfile" "$VERSION" "$REVISION"
    docker build "$@" \
        --label "org.opencontainers.image.title=$repository" \
        --label "org.opencontainers.image.version=$VERSION" \
        --label "org.opencontainers.image.revision=$REVISION" \
        --label "org.opencontainers.image.created=$CREATED" \
        --label "org.opencontainers.image.source=$SOURCE" \
        --file "$dockerfile" --tag "$image" --tag "$repository:$VERSION" --tag "$repository:$REVISION" . ||
        fail "building $image from $dockerfile failed (see the output above); stopped at the first error"
}
