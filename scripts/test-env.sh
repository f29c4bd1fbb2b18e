#!/usr/bin/env bash
# Make a real Docker engine, Compose v2 and the local test images available for stackpilot's
# integration tests, without touching the machine's main apt sources and without any image registry.
#
# Usage:
#   scripts/test-env.sh [start]   ensure engine + compose + images; write the env file; print what it did
#   . scripts/test-env.sh         same, then export DOCKER_HOST into the calling shell
#   scripts/test-env.sh stop      stop the private dockerd this script started (by its recorded pid)
#   scripts/test-env.sh status    say whether the private dockerd runs
#   scripts/test-env.sh env       print the env file path (after a successful start)
#
# Exit status: 0 ready; 3 not available outside CI (callers skip Docker tests, reason on stderr);
# 1 anything missing under CI=true (fail loudly).
#
# The env file (/run/stackpilot-test/env as root, else $XDG_RUNTIME_DIR or /tmp/stackpilot-test-UID/env) holds `export KEY=VALUE` lines (no quoting, no spaces):
#   DOCKER_HOST, STACKPILOT_TEST_DOCKER=1, STACKPILOT_TEST_BUSYBOX_IMAGE, STACKPILOT_TEST_POSTGRES_IMAGE,
#   STACKPILOT_TEST_MONGO_STANDIN_IMAGE.
# `start` also runs scripts/peers/ollama.sh start (the real Ollama + a registry; its own env file
# ${SP_RUN_DIR}/peers-ollama.env, see scripts/peers/ollama.md).
# The data root (/var/lib/stackpilot-docker) is kept between runs: it is the image cache.

# Where the env file and the lock live: /run/stackpilot-test for root (which may start the
# private dockerd), a per-user directory otherwise (which can only use an engine that answers).
if [[ $(id -u) -eq 0 ]]; then
    SP_RUN_DIR=/run/stackpilot-test
else
    SP_RUN_DIR="${XDG_RUNTIME_DIR:-/tmp}/stackpilot-test-$(id -u)"
fi

# Sourced: run in a child bash (so `set -e` never leaks into the caller), then import the env file.
if [[ "${BASH_SOURCE[0]}" != "${0}" ]]; then
    _sp_rc=0
    bash "${BASH_SOURCE[0]}" "${@:-start}" || _sp_rc=$?
    if [[ ${_sp_rc} -eq 0 && -r "${SP_RUN_DIR}/env" ]]; then
        # shellcheck disable=SC1091
        . "${SP_RUN_DIR}/env"
    fi
    return ${_sp_rc}
fi

set -euo pipefail

STATE_DIR=/run/stackpilot-test
PRIVATE_SOCK="${STATE_DIR}/docker.sock"
PRIVATE_HOST="unix://${PRIVATE_SOCK}"
DATA_ROOT=/var/lib/stackpilot-docker
EXEC_ROOT="${STATE_DIR}/exec"
PIDFILE="${STATE_DIR}/dockerd.pid"
ENV_FILE="${SP_RUN_DIR}/env"
LOCK_FILE="${SP_RUN_DIR}/lock"
DOCKERD_LOG=/tmp/stackpilot-dockerd.log
# Build contexts, rootfs, private apt state: outside the repository, never committed.
if [[ $(id -u) -eq 0 ]]; then WORK_DIR=/var/tmp/stackpilot-test; else WORK_DIR="${SP_RUN_DIR}/work"; fi
APT_PRIVATE="${WORK_DIR}/apt-trixie"
COMPOSE_PLUGIN_DIR=/usr/libexec/docker/cli-plugins

BUSYBOX_IMAGE=stackpilot-test/busybox:1
PG_BASE_IMAGE=stackpilot-test/pg15-base:1
POSTGRES_IMAGE=stackpilot-test/postgres:15
MONGO_STANDIN_IMAGE=stackpilot-test/mongo-standin:1
OLLAMA_STANDIN_IMAGE=stackpilot-test/ollama-standin:1

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGES_SRC="${REPO_ROOT}/tests/images"

SCRIPT_T0=$(date +%s.%N)
APT_UPDATED=0

log() { printf 'test-env: %s\n' "$*" >&2; }

# Not available: fail under CI, skip (exit 3) elsewhere.
unavailable() {
    if [[ "${CI:-}" == "true" ]]; then
        printf 'test-env: FATAL (CI=true): %s\n' "$*" >&2
        exit 1
    fi
    printf 'test-env: WARNING: %s; Docker tests will be skipped (exit 3)\n' "$*" >&2
    exit 3
}

# step NAME CMD...: run CMD, print how long it took.
step() {
    local name=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    "$@"
    t1=$(date +%s.%N)
    log "$(awk -v a="${t0}" -v b="${t1}" -v n="${name}" 'BEGIN{printf "step %-18s %6.2fs", n, b-a}')"
}

need_root() {
    [[ $(id -u) -eq 0 ]] || unavailable "$1 needs root (running as uid $(id -u))"
}

apt_update_once() {
    if [[ ${APT_UPDATED} -eq 0 ]]; then
        log "apt-get update (main sources, unchanged)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || unavailable "apt-get update failed"
        APT_UPDATED=1
    fi
}

apt_install() {
    need_root "installing $*"
    command -v apt-get >/dev/null || unavailable "apt-get not found; cannot install $*"
    apt_update_once
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || unavailable "apt-get install $* failed"
}

docker_answers() {
    # $1: DOCKER_HOST value ("" = client default)
    if [[ -n "$1" ]]; then
        DOCKER_HOST="$1" timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
    else
        (unset DOCKER_HOST; timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1)
    fi
}

private_pid_alive() {
    [[ -r "${PIDFILE}" ]] || return 1
    local pid
    pid=$(cat "${PIDFILE}")
    [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/${pid}/cmdline" ]] || return 1
    # Only our dockerd: its command line names our private socket.
    tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -q -- "${PRIVATE_SOCK}"
}

# ---------------------------------------------------------------------------------------------
# Engine
# ---------------------------------------------------------------------------------------------
ensure_docker_cli() {
    if ! command -v docker >/dev/null; then
        apt_install docker.io
        command -v docker >/dev/null || unavailable "docker CLI missing after installing docker.io"
    fi
}

start_private_dockerd() {
    need_root "starting a private dockerd"
    if ! command -v dockerd >/dev/null; then
        apt_install docker.io
    fi
    command -v dockerd >/dev/null || unavailable "dockerd not found (package docker.io)"
    mkdir -p "${STATE_DIR}" "${EXEC_ROOT}" "${DATA_ROOT}"
    rm -f "${PRIVATE_SOCK}"
    log "starting private dockerd on ${PRIVATE_HOST} (log ${DOCKERD_LOG})"
    # setsid + nohup: the daemon outlives this script and the test harness's process group.
    setsid nohup dockerd \
        --host "${PRIVATE_HOST}" \
        --data-root "${DATA_ROOT}" \
        --exec-root "${EXEC_ROOT}" \
        --pidfile "${PIDFILE}" \
        </dev/null >>"${DOCKERD_LOG}" 2>&1 9>&- &   # 9>&-: the daemon must not inherit the lock
    local i
    for i in $(seq 1 60); do
        if docker_answers "${PRIVATE_HOST}"; then
            return 0
        fi
        sleep 0.5
    done
    tail -n 20 "${DOCKERD_LOG}" >&2 || true
    unavailable "private dockerd did not answer within 30 s (see ${DOCKERD_LOG})"
}

ensure_engine() {
    ensure_docker_cli
    if [[ -n "${DOCKER_HOST:-}" && "${DOCKER_HOST}" != "${PRIVATE_HOST}" ]]; then
        if docker_answers "${DOCKER_HOST}"; then
            ENGINE_HOST="${DOCKER_HOST}"; ENGINE_HOW="existing engine at DOCKER_HOST"
            return
        fi
        log "DOCKER_HOST=${DOCKER_HOST} does not answer; falling back to the private engine"
    elif [[ -z "${DOCKER_HOST:-}" ]] && docker_answers ""; then
        ENGINE_HOST=""; ENGINE_HOW="existing engine at the client default"
        return
    fi
    if [[ $(id -u) -ne 0 ]]; then
        unavailable "no Docker engine answers for uid $(id -u) (DOCKER_HOST=${DOCKER_HOST:-<default>}); the private engine needs root: run scripts/test-env.sh as root or point DOCKER_HOST at an engine you can use"
    fi
    if private_pid_alive; then
        local i
        for i in $(seq 1 20); do
            if docker_answers "${PRIVATE_HOST}"; then
                ENGINE_HOST="${PRIVATE_HOST}"; ENGINE_HOW="private dockerd already running (pid $(cat "${PIDFILE}"))"
                return
            fi
            sleep 0.5
        done
        unavailable "private dockerd pid $(cat "${PIDFILE}") runs but does not answer on ${PRIVATE_HOST} (see ${DOCKERD_LOG}; scripts/test-env.sh stop, then retry)"
    fi
    start_private_dockerd
    ENGINE_HOST="${PRIVATE_HOST}"; ENGINE_HOW="started private dockerd (pid $(cat "${PIDFILE}" 2>/dev/null || echo '?'))"
}

# ---------------------------------------------------------------------------------------------
# Compose v2
# ---------------------------------------------------------------------------------------------
compose_v2_version() {
    docker compose version --short 2>/dev/null | grep -E '^v?2\.' || return 1
}

# The Debian mirror this machine's apt uses (a corporate mirror, a proxy, a snapshot): the first
# `URIs:` of a deb822 source that is not the security archive, else the first `deb` line of
# sources.list. No mirror host is named in this repository.
debian_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r "$f" ]] || continue
        uri=$(awk 'tolower($1)=="uris:" { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
        if [[ -n "${uri}" ]]; then echo "${uri%/}"; return 0; fi
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r "$f" ]] || continue
        uri=$(awk '$1=="deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($i !~ /security/) { print $i; exit } } }' "$f")
        if [[ -n "${uri}" ]]; then echo "${uri%/}"; return 0; fi
    done
    return 1
}

install_compose_from_trixie() {
    need_root "installing the Compose v2 plugin"
    mkdir -p "${APT_PRIVATE}/lists/partial" "${APT_PRIVATE}/cache/archives/partial" "${APT_PRIVATE}/deb"
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    local mirror
    mirror=$(debian_mirror) || unavailable "no Debian mirror in this machine's apt configuration (/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list)"
    echo "deb [signed-by=${keyring}] ${mirror} trixie main" >"${APT_PRIVATE}/sources.list"
    # A private state dir: bookworm's lists, caches and sources stay exactly as they are.
    local opts=(
        -o "Dir::Etc::SourceList=${APT_PRIVATE}/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State::Lists=${APT_PRIVATE}/lists"
        -o "Dir::Cache=${APT_PRIVATE}/cache"
        -o "APT::Get::List-Cleanup=0"
    )
    log "fetching docker-compose (Compose v2) from Debian trixie via private apt state ${APT_PRIVATE}"
    apt-get "${opts[@]}" update -qq >/dev/null || unavailable "apt-get update for trixie (private state) failed"
    rm -f "${APT_PRIVATE}/deb/"*.deb
    chown _apt "${APT_PRIVATE}/deb" 2>/dev/null || true   # apt downloads as _apt when it can
    (cd "${APT_PRIVATE}/deb" && apt-get "${opts[@]}" download docker-compose >/dev/null) \
        || unavailable "apt-get download docker-compose (trixie) failed"
    rm -rf "${APT_PRIVATE}/x"
    dpkg -x "${APT_PRIVATE}/deb/"docker-compose_*.deb "${APT_PRIVATE}/x"
    local bin="${APT_PRIVATE}/x/usr/libexec/docker/cli-plugins/docker-compose"
    [[ -x "${bin}" ]] || unavailable "docker-compose .deb has no cli-plugins/docker-compose"
    mkdir -p "${COMPOSE_PLUGIN_DIR}"
    install -m 0755 "${bin}" "${COMPOSE_PLUGIN_DIR}/docker-compose"
}

ensure_compose() {
    if COMPOSE_VERSION=$(compose_v2_version); then
        COMPOSE_HOW="present"
        return
    fi
    install_compose_from_trixie
    COMPOSE_VERSION=$(compose_v2_version) \
        || unavailable "docker compose version is not 2.x after installing the plugin: $(docker compose version 2>&1 | head -n1)"
    COMPOSE_HOW="installed into ${COMPOSE_PLUGIN_DIR}"
}

# ---------------------------------------------------------------------------------------------
# Images (built only when missing)
# ---------------------------------------------------------------------------------------------
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Hash of an image's sources under tests/images/<name>/: an image built from other sources is stale.
src_hash() {
    (cd "${IMAGES_SRC}/$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

# image_current IMAGE NAME: the image exists and was built from the current sources.
image_current() {
    local have
    have=$(docker image inspect -f '{{index .Config.Labels "io.stackpilot.test.src"}}' "$1" 2>/dev/null) || return 1
    [[ "${have}" == "$(src_hash "$2")" ]]
}

legacy_build() {
    # $1 image, $2 context, $3 source name. The 20.10 engine + a CLI without buildx: the classic builder.
    local errlog="${WORK_DIR}/build-${1//[^a-zA-Z0-9]/_}.log"
    if ! DOCKER_BUILDKIT=0 docker build -q --label "io.stackpilot.test.src=$(src_hash "$3")" -t "$1" "$2" >"${errlog}" 2>&1; then
        grep -v -e DEPRECATED -e 'legacy builder' -e BuildKit -e 'environment-variable' "${errlog}" | tail -n 30 >&2
        return 1
    fi
    # The image this one replaced (stale sources) is now dangling: drop it, and only it.
    docker image prune -f --filter "label=io.stackpilot.test.src" >/dev/null 2>&1 || true
}

build_busybox() {
    if image_current "${BUSYBOX_IMAGE}" busybox; then IMAGES_DONE+=("${BUSYBOX_IMAGE}=cached"); return; fi
    local bb=/bin/busybox
    if ! file_is_static_busybox "${bb}"; then
        apt_install busybox-static
    fi
    file_is_static_busybox "${bb}" || unavailable "no static busybox at ${bb} (package busybox-static)"
    local ctx="${WORK_DIR}/ctx-busybox"
    rm -rf "${ctx}"; mkdir -p "${ctx}"
    cp -a "${IMAGES_SRC}/busybox/." "${ctx}/"
    cp "${bb}" "${ctx}/busybox"
    legacy_build "${BUSYBOX_IMAGE}" "${ctx}" busybox || unavailable "docker build ${BUSYBOX_IMAGE} failed"
    rm -rf "${ctx}"
    IMAGES_DONE+=("${BUSYBOX_IMAGE}=built")
}

# The Ollama stand-in (tests/images/ollama-standin): the stand-in's source built as one static
# binary (musl when that target is installed, else glibc with crt-static) into a FROM scratch
# image. Rebuilt when the image directory, tests/ollama_standin/ or the GGUF parser it includes
# (src/domain/models/gguf.rs) change.
build_ollama_standin() {
    local want have
    want=$( { src_hash ollama-standin; (cd "${REPO_ROOT}/tests/ollama_standin" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); sha256sum <"${REPO_ROOT}/src/domain/models/gguf.rs"; } | sha256sum | cut -c1-16)
    have=$(docker image inspect -f '{{index .Config.Labels "io.stackpilot.test.src"}}' "${OLLAMA_STANDIN_IMAGE}" 2>/dev/null || true)
    if [[ "${have}" == "${want}" ]]; then IMAGES_DONE+=("${OLLAMA_STANDIN_IMAGE}=cached"); return; fi
    command -v cargo >/dev/null || unavailable "cargo is needed to build ${OLLAMA_STANDIN_IMAGE}"
    local target triple rustflags=""
    if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
        triple=x86_64-unknown-linux-musl
    else
        triple=$(rustc -vV | sed -n 's/^host: //p'); rustflags="-C target-feature=+crt-static"
    fi
    target="${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/ollama-standin-image"
    local errlog="${WORK_DIR}/build-ollama-standin.log"
    if ! (cd "${IMAGES_SRC}/ollama-standin" && RUSTFLAGS="${rustflags}" cargo build --release --locked \
            --target "${triple}" --target-dir "${target}") >"${errlog}" 2>&1; then
        tail -n 30 "${errlog}" >&2
        unavailable "cargo build of the Ollama stand-in (${triple}) failed"
    fi
    local bin="${target}/${triple}/release/ollama-standin"
    local out; out=$(LC_ALL=C ldd "${bin}" 2>&1 || true)
    [[ "${out}" == *"not a dynamic executable"* || "${out}" == *"statically linked"* ]] \
        || unavailable "the Ollama stand-in built for ${triple} is not static: ${out}"
    local ctx="${WORK_DIR}/ctx-ollama-standin"
    rm -rf "${ctx}"; mkdir -p "${ctx}"
    cp "${IMAGES_SRC}/ollama-standin/Dockerfile" "${ctx}/"
    cp "${bin}" "${ctx}/ollama-standin"
    if ! DOCKER_BUILDKIT=0 docker build -q --label "io.stackpilot.test.src=${want}" -t "${OLLAMA_STANDIN_IMAGE}" "${ctx}" >"${errlog}" 2>&1; then
        grep -v -e DEPRECATED -e 'legacy builder' -e BuildKit -e 'environment-variable' "${errlog}" | tail -n 30 >&2
        unavailable "docker build ${OLLAMA_STANDIN_IMAGE} failed"
    fi
    docker image prune -f --filter "label=io.stackpilot.test.src" >/dev/null 2>&1 || true
    rm -rf "${ctx}"
    IMAGES_DONE+=("${OLLAMA_STANDIN_IMAGE}=built (${triple})")
}

file_is_static_busybox() {
    [[ -x "$1" ]] || return 1
    # busybox-static's binary is not dynamic; the `busybox` package's one is.
    local out
    out=$(LC_ALL=C ldd "$1" 2>&1 || true)
    [[ "${out}" == *"not a dynamic executable"* || "${out}" == *"statically linked"* ]]
}

build_pg_base() {
    if image_exists "${PG_BASE_IMAGE}"; then return; fi
    need_root "debootstrap"
    command -v debootstrap >/dev/null || apt_install debootstrap
    local root="${WORK_DIR}/rootfs-pg15"
    rm -rf "${root}"; mkdir -p "${root}"
    local mirror
    mirror=$(debian_mirror) || unavailable "no Debian mirror in this machine's apt configuration (/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list)"
    log "debootstrap minbase bookworm + postgresql-15 from ${mirror} into ${root} (about a minute)"
    debootstrap --variant=minbase --include=postgresql-15 bookworm "${root}" "${mirror}" \
        >"${WORK_DIR}/debootstrap.log" 2>&1 || { tail -n 20 "${WORK_DIR}/debootstrap.log" >&2; unavailable "debootstrap of the postgres rootfs failed"; }
    # The package's default cluster, downloaded .debs, apt lists and docs are not needed in the image.
    rm -rf "${root}/etc/postgresql/15" "${root}/var/lib/postgresql/15" \
        "${root}/var/cache/apt/archives/"*.deb "${root}/var/lib/apt/lists/"* \
        "${root}/usr/share/doc/"* "${root}/usr/share/man/"* "${root}/usr/share/info/"* \
        "${root}/usr/share/locale/"*
    tar -C "${root}" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        - "${PG_BASE_IMAGE}" >/dev/null || unavailable "docker import of the postgres rootfs failed"
    rm -rf "${root}"
}

build_postgres() {
    if image_current "${POSTGRES_IMAGE}" postgres; then IMAGES_DONE+=("${POSTGRES_IMAGE}=cached"); return; fi
    step "postgres base rootfs" build_pg_base
    legacy_build "${POSTGRES_IMAGE}" "${IMAGES_SRC}/postgres" postgres || unavailable "docker build ${POSTGRES_IMAGE} failed"
    IMAGES_DONE+=("${POSTGRES_IMAGE}=built")
}

# The MongoDB stand-in (tests/images/mongo-standin): busybox plus shell mongodump/mongorestore/mongosh.
# Built after busybox (its base); rebuilt when its sources or the busybox image change.
build_mongo_standin() {
    local want have
    want="$(src_hash mongo-standin)-$(docker image inspect -f '{{.Id}}' "${BUSYBOX_IMAGE}" 2>/dev/null | cut -c8-19)"
    have=$(docker image inspect -f '{{index .Config.Labels "io.stackpilot.test.src"}}' "${MONGO_STANDIN_IMAGE}" 2>/dev/null || true)
    if [[ "${have}" == "${want}" ]]; then IMAGES_DONE+=("${MONGO_STANDIN_IMAGE}=cached"); return; fi
    local errlog="${WORK_DIR}/build-mongo-standin.log"
    if ! DOCKER_BUILDKIT=0 docker build -q --label "io.stackpilot.test.src=${want}" -t "${MONGO_STANDIN_IMAGE}" "${IMAGES_SRC}/mongo-standin" >"${errlog}" 2>&1; then
        grep -v -e DEPRECATED -e 'legacy builder' -e BuildKit -e 'environment-variable' "${errlog}" | tail -n 30 >&2
        unavailable "docker build ${MONGO_STANDIN_IMAGE} failed"
    fi
    docker image prune -f --filter "label=io.stackpilot.test.src" >/dev/null 2>&1 || true
    IMAGES_DONE+=("${MONGO_STANDIN_IMAGE}=built")
}

# The user-shaped stacks' and compose/examples/' images (redis, python, postgres-hub, qdrant stand-in).
# shellcheck source=scripts/test-env-stacks.sh
. "${REPO_ROOT}/scripts/test-env-stacks.sh"

# ---------------------------------------------------------------------------------------------
write_env() {
    local tmp="${ENV_FILE}.tmp.$$"
    {
        echo "# written by scripts/test-env.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        if [[ -n "${ENGINE_HOST}" ]]; then
            echo "export DOCKER_HOST=${ENGINE_HOST}"
        else
            echo "unset DOCKER_HOST"
        fi
        echo "export STACKPILOT_TEST_DOCKER=1"
        echo "export STACKPILOT_TEST_BUSYBOX_IMAGE=${BUSYBOX_IMAGE}"
        echo "export STACKPILOT_TEST_POSTGRES_IMAGE=${POSTGRES_IMAGE}"
        echo "export STACKPILOT_TEST_MONGO_STANDIN_IMAGE=${MONGO_STANDIN_IMAGE}"
        echo "export STACKPILOT_TEST_OLLAMA_STANDIN_IMAGE=${OLLAMA_STANDIN_IMAGE}"
        write_stack_env
    } >"${tmp}"
    mv "${tmp}" "${ENV_FILE}"
}

cmd_start() {
    mkdir -p "${SP_RUN_DIR}" 2>/dev/null || unavailable "cannot create ${SP_RUN_DIR}"
    # Serialize concurrent callers (parallel test binaries may all call this script).
    { exec 9>>"${LOCK_FILE}"; } 2>/dev/null || unavailable "cannot open ${LOCK_FILE} (uid $(id -u))"
    flock -w 900 9 || unavailable "timed out waiting for another scripts/test-env.sh run"
    mkdir -p "${WORK_DIR}" 2>/dev/null || unavailable "cannot create ${WORK_DIR}"

    ENGINE_HOST=""; ENGINE_HOW=""; COMPOSE_VERSION=""; COMPOSE_HOW=""; IMAGES_DONE=()
    step "engine" ensure_engine
    if [[ -n "${ENGINE_HOST}" ]]; then export DOCKER_HOST="${ENGINE_HOST}"; else unset DOCKER_HOST; fi
    step "compose v2" ensure_compose
    step "image busybox" build_busybox
    step "image postgres" build_postgres
    step "image mongo-standin" build_mongo_standin
    step "image ollama-standin" build_ollama_standin
    build_stack_images
    write_env
    # The real Ollama 0.11.4 and a real registry seeded with smollm2:135m (scripts/peers/ollama.sh
    # writes ${SP_RUN_DIR}/peers-ollama.env, which the tests read). Not through `step`: its `||`
    # context would turn off `set -e` inside and hide a failure. Exit 3 (not available here)
    # leaves the rest of the environment usable; under CI=true the script exits 1, and so do we.
    local peers_rc=0 peers_t0
    peers_t0=$(date +%s.%N)
    bash "${REPO_ROOT}/scripts/peers/ollama.sh" start || peers_rc=$?
    log "$(awk -v a="${peers_t0}" -v b="$(date +%s.%N)" 'BEGIN{printf "step %-18s %6.2fs", "real ollama peers", b-a}')"
    if [[ ${peers_rc} -ne 0 ]]; then
        [[ "${CI:-}" != "true" ]] || unavailable "scripts/peers/ollama.sh start failed (exit ${peers_rc}): the real Ollama, its image or its registry is missing"
        log "WARNING: scripts/peers/ollama.sh start exited ${peers_rc}: tests against the real Ollama will be skipped"
    fi

    local total
    total=$(awk "BEGIN{printf \"%.2f\", $(date +%s.%N) - ${SCRIPT_T0}}")
    log "engine:  ${ENGINE_HOW}; DOCKER_HOST=${ENGINE_HOST:-<client default>}"
    log "compose: ${COMPOSE_VERSION} (${COMPOSE_HOW})"
    log "images:  ${IMAGES_DONE[*]}"
    log "env:     ${ENV_FILE}   (source it, or: . scripts/test-env.sh)"
    log "ready in ${total}s"
}

cmd_stop() {
    if ! private_pid_alive; then
        log "no private dockerd recorded in ${PIDFILE} is running; nothing to stop"
        rm -f "${ENV_FILE}"
        return 0
    fi
    local pid i
    pid=$(cat "${PIDFILE}")
    log "stopping private dockerd pid ${pid}"
    kill -TERM "${pid}"
    for i in $(seq 1 60); do
        [[ -d "/proc/${pid}" ]] || break
        sleep 0.5
    done
    if [[ -d "/proc/${pid}" ]]; then
        log "dockerd pid ${pid} still running after 30 s; sending KILL"
        kill -KILL "${pid}" || true
    fi
    rm -f "${ENV_FILE}" "${PIDFILE}"
    log "stopped (data root ${DATA_ROOT} kept as the image cache)"
}

cmd_status() {
    if private_pid_alive && docker_answers "${PRIVATE_HOST}"; then
        echo "running pid $(cat "${PIDFILE}") DOCKER_HOST=${PRIVATE_HOST}"
    else
        echo "not running"
        return 1
    fi
}

case "${1:-start}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) [[ -r "${ENV_FILE}" ]] && echo "${ENV_FILE}" || { echo "no env file; run scripts/test-env.sh" >&2; exit 1; } ;;
    *) echo "usage: $0 [start|stop|status|env]" >&2; exit 2 ;;
esac
