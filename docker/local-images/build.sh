#!/usr/bin/env bash
# Local equivalents of the upstream images, built without any image registry:
#   docker/local-images/build.sh [--rebuild] [--ha] [--env-file PATH]
# A Debian trixie rootfs made with debootstrap and `docker import`ed, then one small image per
# upstream image FROM it (python/, postgres/, rabbitmq/, nginx/, fluentd-standin/; README.md).
# Builds only what is missing or out of date: each image carries the sha256 of its build context
# and of its parent's image id in the label btc-orders-local.key. --rebuild builds everything again.
# --ha also builds the nodes of docker-compose.ha.yml (patroni/, etcd/) and prints their settings.
# Progress goes to stderr; stdout gets ONLY the settings that point the cluster at these images,
# one NAME=value a line, for:   set -a; eval "$(docker/local-images/build.sh)"; set +a
# --env-file PATH writes the same lines to PATH. Never pulls. Needs root (debootstrap) and docker.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
SUITE=trixie
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_CA=${HOST_CA_BUNDLE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}
DOCKER=${DOCKER:-docker}
LABEL=btc-orders-local.key

ROOTFS_IMAGE=btc-orders-local/debian:trixie
# directory:image, in build order (each FROM an earlier one).
IMAGES=(
    python:btc-orders-local/python:3.13-trixie
    postgres:btc-orders-local/postgres:17-trixie
    rabbitmq:btc-orders-local/rabbitmq:4.0-management-trixie
    nginx:btc-orders-local/nginx-unprivileged:1.26-trixie
    fluentd-standin:btc-orders-local/fluentd-standin:trixie
)
# The HA cluster's nodes (--ha): the write model under Patroni, and etcd for its leader lock.
HA_IMAGES=(
    patroni:btc-orders-local/patroni:17-trixie
    etcd:btc-orders-local/etcd:3.5-trixie
)

fail() { printf 'local-images/build.sh: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*" >&2; }

rebuild=0
ha=0
env_file=
while [ $# -gt 0 ]; do
    case $1 in
        --rebuild) rebuild=1 ;;
        --ha) ha=1 ;;
        --env-file) [ $# -ge 2 ] || fail "--env-file needs a path"; env_file=$2; shift ;;
        --env-file=*) env_file=${1#--env-file=} ;;
        -h | --help) sed -n '2,10p' "$0" >&2; exit 0 ;;
        *) fail "unknown argument '$1' (usage: build.sh [--rebuild] [--ha] [--env-file PATH])" ;;
    esac
    shift
done

command -v "$DOCKER" >/dev/null 2>&1 || fail "'$DOCKER' is not on PATH: install docker.io first"
"$DOCKER" info >/dev/null 2>&1 || fail "the docker engine does not answer ('$DOCKER info' fails): start dockerd first"

# One build at a time on this machine (the images are shared); a cold build takes minutes.
lock=${TMPDIR:-/var/tmp}/btc-orders-local.lock
exec 9>>"$lock" || fail "cannot open the lock file $lock"
if ! flock --nonblock 9; then
    say "waiting for another build.sh to finish (at most 30 min)"
    flock --wait 1800 9 || fail "another build.sh still holds $lock after 30 min"
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/btc-orders-local.XXXXXX")
cleanup() { rm -rf --one-file-system "$work"; }
trap cleanup EXIT

label_of() { "$DOCKER" image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true; }
image_id() { "$DOCKER" image inspect --format '{{.Id}}' "$1"; }
# The sha256 of a directory's files, names, modes and contents (not their times or owners).
tree_sha() { tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf - . | sha256sum | cut -d' ' -f1; }

# --- The rootfs: debootstrap once, then `docker import` ------------------------------------
build_rootfs() {
    local key=$1 rootfs=$work/rootfs old start=$SECONDS
    [ "$(id -u)" = 0 ] || fail "debootstrap needs root to build $ROOTFS_IMAGE (run build.sh as root)"
    command -v debootstrap >/dev/null 2>&1 || fail "debootstrap is not installed (apt-get install debootstrap)"
    say "debootstrap --variant=minbase $SUITE from $MIRROR (about a minute)"
    debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
        tail -n 5 "$work/debootstrap.log" >&2
        fail "debootstrap of $SUITE from $MIRROR failed (last lines above)"
    }
    "$here/debian/prepare-rootfs.sh" "$rootfs" || fail "preparing the $SUITE rootfs failed"
    say "docker import $ROOTFS_IMAGE"
    old=$(image_id "$ROOTFS_IMAGE" 2>/dev/null || true)
    tar --numeric-owner -C "$rootfs" -cf - . |
        "$DOCKER" import \
            --change 'ENV LANG=C.UTF-8' \
            --change 'CMD ["bash"]' \
            --change "LABEL $LABEL=$key" \
            --message "debootstrap --variant=minbase $SUITE $MIRROR" \
            - "$ROOTFS_IMAGE" >&2 || fail "docker import of the $SUITE rootfs failed"
    rm -rf --one-file-system "$rootfs"
    say "built $ROOTFS_IMAGE in $((SECONDS - start)) s"
    drop_replaced "$old" "$ROOTFS_IMAGE"
}

# --- One image FROM the previous ones --------------------------------------------------------
# The build context is a copy of the image's directory (python/ also gets the host's CA bundle).
build_image() {
    local dir=$1 image=$2 context=$work/context-$1 parent key
    rm -rf "$context"
    cp -a "$here/$dir" "$context"
    if [ "$dir" = python ]; then
        [ -r "$HOST_CA" ] || fail "the host CA bundle $HOST_CA is not readable (HOST_CA_BUNDLE names another)"
        cp "$HOST_CA" "$context/host-ca.crt"
    fi
    parent=$(sed -n 's/^FROM[[:space:]]\{1,\}\([^[:space:]]\{1,\}\).*/\1/p' "$context/Dockerfile" | head -n 1)
    [ -n "$parent" ] || fail "$dir/Dockerfile has no FROM line"
    key=$(printf '%s %s\n' "$(tree_sha "$context")" "$(image_id "$parent")" | sha256sum | cut -d' ' -f1)
    if [ "$rebuild" = 0 ] && [ "$(label_of "$image")" = "$key" ]; then
        say "$image is up to date"
        return
    fi
    say "building $image ($dir/)"
    local start=$SECONDS old
    old=$(image_id "$image" 2>/dev/null || true)
    DOCKER_BUILDKIT=0 "$DOCKER" build --label "$LABEL=$key" --tag "$image" "$context" >&2 ||
        fail "building $image from docker/local-images/$dir failed (see the output above)"
    say "built $image in $((SECONDS - start)) s"
    drop_replaced "$old" "$image"
}

# The image a rebuild replaced, if nothing uses it any more (docker refuses while a container or
# a child image does, and then it stays).
drop_replaced() {
    if [ -n "$1" ] && [ "$1" != "$(image_id "$2")" ]; then
        "$DOCKER" image rm "$1" >/dev/null 2>&1 || true
    fi
}

rootfs_key=$(printf '%s %s %s\n' "$SUITE" "$MIRROR" "$(tree_sha "$here/debian")" | sha256sum | cut -d' ' -f1)
if [ "$rebuild" = 0 ] && [ "$(label_of "$ROOTFS_IMAGE")" = "$rootfs_key" ]; then
    say "$ROOTFS_IMAGE is up to date"
else
    build_rootfs "$rootfs_key"
fi
[ "$ha" = 0 ] || IMAGES+=("${HA_IMAGES[@]}")
for entry in "${IMAGES[@]}"; do
    build_image "${entry%%:*}" "${entry#*:}"
done

settings=$(
    cat <<EOF
PYTHON_IMAGE=btc-orders-local/python:3.13-trixie
POSTGRES_IMAGE=btc-orders-local/postgres:17-trixie
RABBITMQ_IMAGE=btc-orders-local/rabbitmq:4.0-management-trixie
FLUENTD_IMAGE=btc-orders-local/fluentd-standin:trixie
NGINX_IMAGE=btc-orders-local/nginx-unprivileged:1.26-trixie
FLUENTD_HEALTHCHECK=fluentd-standin-healthcheck
EOF
    if [ "$ha" = 1 ]; then
        printf '%s\n' PATRONI_IMAGE=btc-orders-local/patroni:17-trixie ETCD_IMAGE=btc-orders-local/etcd:3.5-trixie
    fi
)
if [ -n "$env_file" ]; then
    printf '%s\n' "$settings" >"$env_file" || fail "cannot write the settings to $env_file"
    say "settings written to $env_file"
fi
printf '%s\n' "$settings"
