#!/bin/sh
# Entrypoint of stackpilot-test/redis:7, after the official image's: options alone mean
# `redis-server <options>`; as root, /data is handed to `redis` and the server runs as that user.
# The official image builds Redis with protected mode off (there is no config file to turn it
# off in); Debian's binary defaults to on, so `--protected-mode no` is passed first (a later
# `--protected-mode yes` on the command line still wins).
set -eu
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi
if [ "$1" = redis-server ]; then
    shift
    set -- redis-server --protected-mode no "$@"
    if [ "$(id -u)" = 0 ]; then
        find . \! -user redis -exec chown redis '{}' +
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi
um="$(umask)"
if [ "$um" = 0022 ]; then
    umask 0077
fi
exec "$@"
