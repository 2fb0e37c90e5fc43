#!/usr/bin/env bash
# Patroni's post_bootstrap: run once, on the node that initialised the cluster, with a
# superuser connection string as $1: creates the application's database (POSTGRES_DB).
set -euo pipefail
db=${POSTGRES_DB:-write_model}
psql -v ON_ERROR_STOP=1 --no-psqlrc "$1" --set db="$db" <<<'CREATE DATABASE :"db";'
