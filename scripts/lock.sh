#!/usr/bin/env bash
# Regenerate codebase/requirements.lock: the whole runtime dependency tree of
# codebase/requirements.txt, every version pinned and every file hashed, for every
# Python and platform the suite runs on (the images' 3.13, the machine's 3.11+).
# Run it after changing codebase/requirements.txt; tests/containers checks the two agree.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=.venv/bin/uv
[ -x "$uv" ] || { echo "lock.sh: $uv is missing: run ./test.sh once (it installs uv from requirements-tools.txt)" >&2; exit 1; }
# --native-tls: trust the system's CA bundle (a TLS-intercepting proxy may sit before the index).
"$uv" pip compile --native-tls --quiet --universal --python-version 3.11 --generate-hashes \
    --no-strip-extras --custom-compile-command scripts/lock.sh \
    --output-file codebase/requirements.lock codebase/requirements.txt
echo "==> codebase/requirements.lock written"
