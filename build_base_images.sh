#!/usr/bin/env bash
# Build every service's base image (pinned dependencies, no code):
#   btc-orders/<service>-base:latest from docker/services/<service>/Dockerfile.base.
# Rebuild them when codebase/requirements.txt changes. Stops at the first failure.
# Uses docker, else podman (CONTAINER_ENGINE=podman to choose).
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=docker/images.sh
source docker/images.sh

pick_engine
for service in "${SERVICES[@]}"; do
    build "$(base_image "$service")" "docker/services/$service/Dockerfile.base"
done
printf '==> %d base images built with %s\n' "${#SERVICES[@]}" "$ENGINE"
