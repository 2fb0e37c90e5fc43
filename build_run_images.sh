#!/usr/bin/env bash
# Build every service's run image (its base + the code): btc-orders/<service> from
# docker/services/<service>/Dockerfile, tagged :latest, :<version> and :<git commit>.
# The bases must exist (./build_base_images.sh). Stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=docker/images.sh
source docker/images.sh

pick_engine
for service in "${SERVICES[@]}"; do
    docker image inspect "$(base_image "$service")" >/dev/null 2>&1 ||
        fail "the base image $(base_image "$service") is missing: run ./build_base_images.sh first"
done
for service in "${SERVICES[@]}"; do
    build "$(run_image "$service")" "docker/services/$service/Dockerfile" \
        --label "org.opencontainers.image.base.name=$(base_image "$service")"
done
printf '==> %d run images built\n' "${#SERVICES[@]}"
