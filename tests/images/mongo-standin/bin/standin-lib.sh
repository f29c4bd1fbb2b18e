# Shared by the stand-in programs: the control file tests write with docker exec.
if [ -f /tmp/standin.env ]; then . /tmp/standin.env; fi
STATE=/data/db/current.archive
is_archive() {
    # $1: a file; true when it starts with the mongodump archive magic.
    printf '\155\342\231\201' > /tmp/.standin-magic
    head -c 4 "$1" | cmp -s - /tmp/.standin-magic
}
