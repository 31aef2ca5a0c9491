#!/usr/bin/env bash
# Idempotent: install Debian's PostgreSQL if missing, start its cluster, create the test role and
# database, print the SQLAlchemy URL the tests read from TUNER_TEST_PG_URL.
# Fast when already done (no apt, no restart). Needs root (apt, pg_ctlcluster, su postgres).
#
#   eval "$(scripts/setup-postgres.sh --export)"   # sets TUNER_TEST_PG_URL
#   scripts/setup-postgres.sh                      # prints the URL only
# apt quiet: no dialogs, no needrestart "which services should be restarted" chatter
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=a
set -euo pipefail

PG_USER="${TUNER_PG_USER:-tuner}"
PG_PASSWORD="${TUNER_PG_PASSWORD:-tuner}"
PG_DB="${TUNER_PG_DB:-tuner}"
PG_PORT="${TUNER_PG_PORT:-5432}"

log() { echo "setup-postgres: $*" >&2; }

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  log "installing postgresql from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi

# The newest installed major version (Debian ships one per release: 15 on bookworm).
PG_VERSION="$(ls /usr/lib/postgresql | sort -n | tail -1)"
if ! pg_lsclusters -h | awk -v v="$PG_VERSION" '$1 == v && $2 == "main"' | grep -q .; then
  log "creating cluster $PG_VERSION/main"
  pg_createcluster "$PG_VERSION" main --port "$PG_PORT" >&2
fi
if ! pg_lsclusters -h | awk -v v="$PG_VERSION" '$1 == v && $2 == "main" {print $4}' | grep -q online; then
  log "starting cluster $PG_VERSION/main"
  # --skip-systemctl-redirect: containers here have no systemd.
  pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main start >&2
fi

psql_admin() { su postgres -c "psql -v ON_ERROR_STOP=1 -qtAX -p $PG_PORT $*"; }

# Wait for the server to accept connections (start returns before it is fully up on slow disks).
for _ in $(seq 1 50); do
  if su postgres -c "pg_isready -q -p $PG_PORT"; then break; fi
  sleep 0.1
done

if [ "$(psql_admin "-c \"SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'\"")" != "1" ]; then
  log "creating role $PG_USER"
  psql_admin "-c \"CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD' CREATEDB\"" >&2
fi
if [ "$(psql_admin "-c \"SELECT 1 FROM pg_database WHERE datname = '$PG_DB'\"")" != "1" ]; then
  log "creating database $PG_DB"
  psql_admin "-c \"CREATE DATABASE $PG_DB OWNER $PG_USER\"" >&2
fi

URL="postgresql+psycopg://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
if [ "${1:-}" = "--export" ]; then
  echo "export TUNER_TEST_PG_URL=$URL"
else
  echo "$URL"
fi
