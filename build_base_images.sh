#!/usr/bin/env bash
# Build every service's base image (the interpreter and the hash-locked runtime dependencies,
# no code): btc-orders/<service>-base from docker/services/<service>/Dockerfile.base, tagged
# :latest, :<version> and :<git commit>. Rebuild them when a lock in codebase/requirements/ changes.
# PYTHON_IMAGE names the Python image they start from (default python:3.13-slim-trixie).
# Stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=docker/images.sh
source docker/images.sh

pick_engine
for service in "${SERVICES[@]}"; do
    build "$(base_image "$service")" "docker/services/$service/Dockerfile.base" \
        --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --label "org.opencontainers.image.base.name=$PYTHON_IMAGE"
done
printf '==> %d base images built from %s\n' "${#SERVICES[@]}" "$PYTHON_IMAGE"
