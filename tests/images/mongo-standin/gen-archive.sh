#!/bin/sh
# Writes the stand-in's known archive to stdout: the 4-byte mongodump archive magic
# (0x8199e26d, little endian), a text prelude, then one `DOC <db.collection> <json>` line per
# document. Deterministic: the same bytes on every build.
#   app.users 1200, app.orders 3400, analytics.events 5000 documents.
set -eu
printf '\155\342\231\201'
printf 'STANDIN-ARCHIVE 1\n'
for spec in app.users:1200 app.orders:3400 analytics.events:5000; do
    printf 'COLLECTION %s %s\n' "${spec%%:*}" "${spec##*:}"
done
printf 'END\n'
for spec in app.users:1200 app.orders:3400 analytics.events:5000; do
    seq 1 "${spec##*:}" | awk -v c="${spec%%:*}" '{ printf "DOC %s {\"_id\":%d,\"v\":\"%08x%08x\",\"n\":%d}\n", c, $1, ($1 * 2654435761) % 4294967296, ($1 * 40503) % 4294967296, $1 % 97 }'
done
