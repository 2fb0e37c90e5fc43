#!/usr/bin/env bash
# Regenerate every lock file: each is a whole dependency tree, every version pinned and every
# file hashed, for every Python and platform the suite runs on (the images' 3.13, the machine's 3.11+).
#   codebase/requirements.lock              requirements.txt: every runtime dependency (the union)
#   codebase/requirements/<service>.lock    what <service>.in names, at requirements.txt's versions
#   codebase/requirements-dev.lock          the tests (requirements-dev.txt)
#   codebase/requirements-tools.lock        the linters and container tools (requirements-tools.txt)
#   codebase/requirements-local.lock        what ./run.sh --local adds (requirements-local.txt)
#   codebase/requirements-build.lock        setuptools, to build the package (requirements-build.txt)
# Each later lock is constrained by the union's, so a package has one version everywhere.
# Run it after changing any requirements file; tests/containers checks that they agree.
#   scripts/lock.sh             keep every unpinned (transitive) version the locks hold when it still fits
#   scripts/lock.sh --upgrade   move every unpinned version to the newest release that fits
set -euo pipefail
cd "$(dirname "$0")/.."
uv=.venv/bin/uv
[ -x "$uv" ] || { echo "lock.sh: $uv is missing: run ./test.sh once (it installs uv from requirements-tools.txt)" >&2; exit 1; }
fail() { printf 'lock.sh: %s\n' "$*" >&2; exit 1; }
upgrade=()
case "${1:-}" in
"") ;;
--upgrade) upgrade=(--upgrade) ;;
*) fail "unknown argument '$1' (usage: scripts/lock.sh [--upgrade])" ;;
esac

compile() {
    # --native-tls: trust the system's CA bundle (a TLS-intercepting proxy may sit before the index).
    "$uv" pip compile --native-tls --quiet --universal --python-version 3.11 --generate-hashes \
        --no-strip-extras --custom-compile-command scripts/lock.sh ${upgrade[@]+"${upgrade[@]}"} "$@"
}

# The pinned lines of requirements.txt, as "name line" pairs (name lower-case, without extras).
pins() {
    sed -e 's/#.*//' -e 's/[[:space:]]*$//' codebase/requirements.txt | grep -v '^[[:space:]]*$' |
        while read -r line; do
            name=$(printf '%s' "${line%%[=<>\[;]*}" | tr '[:upper:]_.' '[:lower:]--')
            printf '%s %s\n' "$name" "$line"
        done
}

# A service's input: the requirements.txt line of each name its .in lists; `postgres-driver`
# stands for the psycopg distributions requirements.txt pins (psycopg and
# psycopg-pool), so that changing the driver there needs no edit here.
service_requirements() {
    local in=$1 name found=0 all
    all=$(pins)
    while read -r name; do
        if [ "$name" = postgres-driver ]; then
            printf '%s\n' "$all" | awk '$1 ~ /^psycopg/ { $1 = ""; sub(/^ /, ""); print }' | grep . ||
                fail "$in: requirements.txt pins no psycopg distribution (postgres-driver)"
            continue
        fi
        found=$(printf '%s\n' "$all" | awk -v name="$name" '$1 == name { $1 = ""; sub(/^ /, ""); print }')
        [ -n "$found" ] || fail "$in names $name, which codebase/requirements.txt does not pin"
        printf '%s\n' "$found"
    done < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$in" | grep -v '^[[:space:]]*$' | tr '[:upper:]_.' '[:lower:]--')
}

compile --output-file codebase/requirements.lock codebase/requirements.txt
echo "==> codebase/requirements.lock"

# Every pin of the union is some service's: requirements.txt is exactly the services' lists together.
needed=$(for in in codebase/requirements/*.in; do service_requirements "$in"; done | sort -u)
while read -r _name line; do
    printf '%s\n' "$needed" | grep -qxF "$line" ||
        fail "no codebase/requirements/*.in names '$line' of requirements.txt: add it where it is used"
done < <(pins)

for in in codebase/requirements/*.in; do
    lock=${in%.in}.lock
    service_requirements "$in" | compile --constraint codebase/requirements.lock --output-file "$lock" -
    echo "==> $lock"
done

# The tests' tree, within the runtime lock and the other files' own pins (one environment: .venv).
compile --constraint codebase/requirements.lock --constraint codebase/requirements-tools.txt \
    --constraint codebase/requirements-local.txt --constraint codebase/requirements-build.txt \
    --output-file codebase/requirements-dev.lock codebase/requirements-dev.txt
echo "==> codebase/requirements-dev.lock"
for extra in tools local build; do
    compile --constraint codebase/requirements-dev.lock --output-file "codebase/requirements-$extra.lock" \
        "codebase/requirements-$extra.txt"
    echo "==> codebase/requirements-$extra.lock"
done
