#!/bin/sh
# The official image's contract: an empty $PGDATA is initialised with POSTGRES_USER,
# POSTGRES_PASSWORD and POSTGRES_DB, password logins over TCP; then the server runs.
set -eu
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  exec runuser -u postgres -- "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  user=${POSTGRES_USER:-postgres}
  password_file=$(mktemp)
  printf '%s' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" > "$password_file"
  # UTF-8, as the official image (LANG=en_US.utf8): SQL_ASCII would hand psycopg bytes.
  initdb --username="$user" --pwfile="$password_file" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 > /dev/null
  rm -f "$password_file"
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  database=${POSTGRES_DB:-$user}
  if [ "$database" != postgres ]; then
    pg_ctl --silent --wait --options="-c listen_addresses=''" start
    createdb --username="$user" "$database"
    pg_ctl --silent --wait --mode=fast stop
  fi
fi
exec "$@"
