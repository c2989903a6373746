#!/usr/bin/env bash
# A real PostgreSQL for the tests, without systemd: install, start the cluster, create the role and
# the database. Idempotent and quick when done. Prints the SQLAlchemy URL on stdout (only that).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PG_USER=${CLOUDCTL_PG_USER:-cloudctl}
PG_PASSWORD=${CLOUDCTL_PG_PASSWORD:-cloudctl}
PG_DB=${CLOUDCTL_PG_DB:-cloudctl_test}
PG_CLUSTER=${CLOUDCTL_PG_CLUSTER:-main}

ensure_debs postgresql

# Debian 12 ships PostgreSQL 15; take whatever major version is installed.
PG_VERSION=${CLOUDCTL_PG_VERSION:-$(ls /usr/lib/postgresql | sort -n | tail -1)}

# postgresql-common's postinst creates 15/main; create it if someone dropped it.
if ! pg_lsclusters --no-header | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c {f=1} END {exit !f}'; then
    log "creating PostgreSQL cluster $PG_VERSION/$PG_CLUSTER"
    pg_createcluster "$PG_VERSION" "$PG_CLUSTER" >/dev/null
fi
PG_PORT=$(pg_lsclusters --no-header | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c {print $3}')

status=$(pg_lsclusters --no-header | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1==v && $2==c {print $4}')
if [[ $status != online* ]]; then
    log "starting PostgreSQL cluster $PG_VERSION/$PG_CLUSTER"
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
fi
for _ in $(seq 1 100); do
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 0.1
done
pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || { log "PostgreSQL does not answer on 127.0.0.1:$PG_PORT"; exit 1; }

psql_admin() { runuser -u postgres -- psql -p "$PG_PORT" -X -q -v ON_ERROR_STOP=1 -tA "$@"; }

if [[ $(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'") != 1 ]]; then
    log "creating PostgreSQL role $PG_USER"
    # CREATEDB: tests may create a throw-away database per run. The statement goes on stdin:
    # with -c the password would be on psql's command line, which every local user can read.
    psql_admin <<<"CREATE ROLE \"$PG_USER\" LOGIN CREATEDB PASSWORD '$PG_PASSWORD'"
fi
if [[ $(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'") != 1 ]]; then
    log "creating PostgreSQL database $PG_DB"
    psql_admin -c "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\""
fi

echo "postgresql+psycopg://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
