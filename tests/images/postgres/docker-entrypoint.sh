#!/bin/sh
# Entrypoint of stackpilot-test/postgres:15 (a test stand-in for the official postgres image).
# Like the official image: an empty data dir (a new named volume, a bind mount) gets a cluster on
# first start; a data dir that already holds PG_VERSION is used as is (POSTGRES_* apply only
# when this script creates the cluster: the image ships one made with the defaults, which Docker
# copies into a new empty named volume). Runs postgres as the
# `postgres` user; when started as root it fixes ownership and drops privileges with setpriv.
#   POSTGRES_USER      superuser name        (default postgres)
#   POSTGRES_PASSWORD  its password          (default stackpilot: a test image, never for real data)
#   POSTGRES_DB        extra database        (default: none beyond `postgres`)
#   PGDATA             cluster directory     (default /var/lib/postgresql/data)
set -eu

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres /var/run/postgresql
    find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

init_cluster() {
    su_user="${POSTGRES_USER:-postgres}"
    pwfile="$(mktemp)"
    printf '%s\n' "${POSTGRES_PASSWORD:-stackpilot}" >"$pwfile"
    initdb -D "$PGDATA" --username="$su_user" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    # Trust on the loopback and the local socket (docker exec pg_dump, pg_isready);
    # a password (scram-sha-256) from anywhere else, e.g. the container network.
    cat >"$PGDATA/pg_hba.conf" <<'HBA'
local   all  all                 trust
host    all  all  127.0.0.1/32   trust
host    all  all  ::1/128        trust
host    all  all  all            scram-sha-256
HBA
    printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    if [ -n "${POSTGRES_DB:-}" ] && [ "${POSTGRES_DB}" != postgres ]; then
        pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start >/dev/null
        createdb -U "$su_user" "$POSTGRES_DB"
        pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
    fi
    echo "docker-entrypoint: initialised a new cluster in $PGDATA" >&2
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    if [ ! -w "$PGDATA" ]; then
        echo "docker-entrypoint: $PGDATA is not writable by uid $(id -u); start the container as root (the default) so the entrypoint can chown it" >&2
        exit 1
    fi
    chmod 700 "$PGDATA"
    init_cluster
fi

if [ "${1:-}" = "--init-only" ]; then
    exit 0
fi
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- postgres "$@"
fi
exec "$@"
