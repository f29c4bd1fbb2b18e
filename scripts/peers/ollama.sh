#!/usr/bin/env bash
# The REAL Ollama server and a real OCI registry (CNCF Distribution) for stackpilot's tests,
# built from their Go modules, with a small real model seeded into the registry. Nothing built
# or fetched lives in the repository: binaries in ${PEERS_CACHE} (keyed by version), rootfs,
# registry storage and logs in ${PEERS_WORK}.
#
# Usage: scripts/peers/ollama.sh [SUBCOMMAND]
#   build            Ollama binary + registry binary (go install) and, when a Docker engine
#                    answers, the images stackpilot-test/ollama:<v> and stackpilot-test/registry:<v>
#   registry-start   start the registry on 127.0.0.1 (pid and address recorded); no-op if running
#   registry-stop    stop it (by its recorded pid)
#   registry-status  say whether it runs, and where
#   seed             smollm2:135m created from the test GGUF and pushed into the registry
#                    (starts the registry if needed; a no-op when the registry already has it)
#   verify           end to end: an empty real Ollama pulls the seeded model from the registry
#                    and generates 8 tokens, on the host and (Docker) in a compose stack
#   env              print the `export KEY=VALUE` lines (after start)
#   start (default)  build + registry-start + seed, then write the env file
#
# Exit status: 0 ready; 3 not available outside CI (reason on stderr); 1 anything missing
# under CI=true (fail loudly). Each step prints how long it took; a warm run costs ~nothing.
#
# The env file (${SP_RUN_DIR}/peers-ollama.env) holds `export KEY=VALUE` lines:
#   STACKPILOT_TEST_OLLAMA_BIN       the real ollama binary (run `serve` with your own OLLAMA_HOST/OLLAMA_MODELS)
#   STACKPILOT_TEST_OLLAMA_VERSION   its version (/api/version answers it)
#   STACKPILOT_TEST_OLLAMA_IMAGE     stackpilot-test/ollama:<version> (only when Docker answered)
#   STACKPILOT_TEST_REGISTRY         host:port of the registry on 127.0.0.1 (plain HTTP: pull with insecure)
#   STACKPILOT_TEST_REGISTRY_MODEL   the seeded model's path in it: library/smollm2:135m
#                                    (pull "$STACKPILOT_TEST_REGISTRY/$STACKPILOT_TEST_REGISTRY_MODEL")
#   STACKPILOT_TEST_REGISTRY_IMAGE   stackpilot-test/registry:<version> (only when Docker answered): a
#                                    compose service on the stack's network, :5000, for Ollama containers
#   STACKPILOT_TEST_REGISTRY_DATA    the seeded storage: mount it read-only at /var/lib/registry
#   STACKPILOT_TEST_REGISTRY_BLOBS   host:port of the blob server the registry redirects blob GETs to
#   STACKPILOT_TEST_REGISTRY_BIN     the registry binary (a test may start a second instance over
#                                    the same storage with another redirect target, e.g. a throttle)
#
# Environment knobs: STACKPILOT_PEERS_OLLAMA_VERSION (default 0.11.4), STACKPILOT_PEERS_CACHE
# (default /var/cache/stackpilot-peers), STACKPILOT_PEERS_WORK (default /var/tmp/stackpilot-peers),
# STACKPILOT_TEST_REGISTRY_PORT (default 15000; the next free one up to +99 is taken if busy),
# CI=true (fail instead of skip), DOCKER_HOST (default: the one in scripts/test-env.sh's env file).

set -euo pipefail

OLLAMA_VERSION="${STACKPILOT_PEERS_OLLAMA_VERSION:-0.11.4}"
OLLAMA_MODULE=github.com/ollama/ollama
REGISTRY_VERSION=3.0.0
REGISTRY_MODULE=github.com/distribution/distribution/v3/cmd/registry
# A modest -march: SSE4.2/POPCNT, runs on any x86-64 machine of the last decade.
OLLAMA_CGO_FLAGS="-O2 -march=x86-64-v2"

PEERS_CACHE="${STACKPILOT_PEERS_CACHE:-/var/cache/stackpilot-peers}"
PEERS_WORK="${STACKPILOT_PEERS_WORK:-/var/tmp/stackpilot-peers}"
OLLAMA_DIR="${PEERS_CACHE}/ollama-${OLLAMA_VERSION}"
OLLAMA_BIN="${OLLAMA_DIR}/ollama"
REGISTRY_DIR="${PEERS_CACHE}/registry-${REGISTRY_VERSION}"
REGISTRY_BIN="${REGISTRY_DIR}/registry"

OLLAMA_IMAGE="stackpilot-test/ollama:${OLLAMA_VERSION}"
REGISTRY_IMAGE="stackpilot-test/registry:${REGISTRY_VERSION}"
# Packages the Ollama image's rootfs gets on top of debootstrap's minbase (libc6, libgcc-s1 are
# in minbase; the binary links libstdc++, libm, libgcc_s, libc: see `ldd`).
OLLAMA_BASE_PACKAGES="libstdc++6,ca-certificates"
OLLAMA_BASE_SUITE=bookworm

REG_PORT_DEFAULT="${STACKPILOT_TEST_REGISTRY_PORT:-15000}"
REG_DIR="${PEERS_WORK}/registry"
REG_DATA="${REG_DIR}/data"
REG_CONFIG="${REG_DIR}/config.yml"
REG_LOG="${REG_DIR}/registry.log"
REG_PIDFILE="${REG_DIR}/registry.pid"
REG_ADDRFILE="${REG_DIR}/registry.addr"   # line 1: registry, line 2: blob server
BLOBS_PIDFILE="${REG_DIR}/blobs.pid"

# The seeded model: SmolLM2-135M-Instruct Q4_1 (scripts/fetch-test-model.sh), whose sha256 is the
# digest of the model layer Ollama pushes.
SEED_REPO=library/smollm2
SEED_TAG=135m
SEED_GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

if [[ $(id -u) -eq 0 ]]; then
    SP_RUN_DIR=/run/stackpilot-test
else
    SP_RUN_DIR="${XDG_RUNTIME_DIR:-/tmp}/stackpilot-test-$(id -u)"
fi
ENV_FILE="${SP_RUN_DIR}/peers-ollama.env"
# The engine scripts/test-env.sh prepared, when the caller did not say which one to use.
if [[ -z "${DOCKER_HOST:-}" && -r "${SP_RUN_DIR}/env" ]]; then
    _dh=$(sed -n 's/^export DOCKER_HOST=//p' "${SP_RUN_DIR}/env")
    if [[ -n "${_dh}" ]]; then export DOCKER_HOST="${_dh}"; fi
fi
LOCK_FILE="${PEERS_WORK}/lock"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGES_SRC="${REPO_ROOT}/tests/images"

log() { printf 'peers/ollama: %s\n' "$*" >&2; }

# Not available: fail under CI, skip (exit 3) elsewhere.
unavailable() {
    if [[ "${CI:-}" == "true" ]]; then
        printf 'peers/ollama: FATAL (CI=true): %s\n' "$*" >&2
        exit 1
    fi
    printf 'peers/ollama: WARNING: %s; tests against the real Ollama will be skipped (exit 3)\n' "$*" >&2
    exit 3
}

# step NAME CMD...: run CMD, print how long it took.
step() {
    local name=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    "$@"
    t1=$(date +%s.%N)
    log "$(awk -v a="${t0}" -v b="${t1}" -v n="${name}" 'BEGIN{printf "step %-22s %7.2fs", n, b-a}')"
}

hash16() { sha256sum | cut -c1-16; }

apt_install() {
    [[ $(id -u) -eq 0 ]] || unavailable "installing $* needs root"
    command -v apt-get >/dev/null || unavailable "apt-get not found; cannot install $*"
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
        || { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >/dev/null; } \
        || unavailable "apt-get install $* failed"
}

# Hash of tests/images/<name>/ (the recipe): an image built from another recipe is stale.
src_hash() {
    (cd "${IMAGES_SRC}/$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | hash16)
}

docker_answers() { command -v docker >/dev/null && timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

pid_is() {
    # pid_is PIDFILE WORD: the recorded pid runs and its command line contains WORD.
    local pid
    [[ -r "$1" ]] || return 1
    pid=$(cat "$1")
    [[ "${pid}" =~ ^[0-9]+$ && -r "/proc/${pid}/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -q -- "$2"
}

port_free() {
    # Nothing listens on 127.0.0.1:$1.
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ---------------------------------------------------------------------------------------------
# Binaries (go install into a cache directory keyed by version; a stamp records the flags)
# ---------------------------------------------------------------------------------------------
need_go() {
    command -v go >/dev/null || unavailable "go is needed to build $1 (Go toolchain not on PATH)"
}

go_install() {
    # go_install DIR STAMP LOG ENV... -- ARGS...: build into DIR unless DIR/.stamp equals STAMP.
    local dir=$1 stamp=$2 buildlog=$3; shift 3
    local envs=()
    while [[ $1 != "--" ]]; do envs+=("$1"); shift; done
    shift
    mkdir -p "${dir}"
    rm -f "${dir}/.stamp"
    # Run outside any module (the clone's go.work/go.mod must not matter); nice: 2 shared cores.
    if ! (cd /tmp && nice -n 10 env GOBIN="${dir}" GOFLAGS=-buildvcs=false "${envs[@]}" go install "$@") >"${buildlog}" 2>&1; then
        grep -v '^go: downloading' "${buildlog}" | tail -n 30 >&2
        return 1
    fi
    printf '%s\n' "${stamp}" >"${dir}/.stamp"
}

build_ollama_bin() {
    local stamp="ollama ${OLLAMA_VERSION} cgo:${OLLAMA_CGO_FLAGS}"
    if [[ -x "${OLLAMA_BIN}" && "$(cat "${OLLAMA_DIR}/.stamp" 2>/dev/null)" == "${stamp}" ]]; then
        DONE+=("ollama-bin=cached"); return
    fi
    need_go "Ollama ${OLLAMA_VERSION}"
    command -v gcc >/dev/null || unavailable "gcc is needed to build Ollama (cgo)"
    command -v g++ >/dev/null || unavailable "g++ is needed to build Ollama (cgo)"
    log "go install ${OLLAMA_MODULE}@v${OLLAMA_VERSION} (cgo, CPU backend; about 4-8 min cold on 2 cores)"
    go_install "${OLLAMA_DIR}" "${stamp}" "${PEERS_WORK}/build-ollama-${OLLAMA_VERSION}.log" \
        CGO_ENABLED=1 "CGO_CFLAGS=${OLLAMA_CGO_FLAGS}" "CGO_CXXFLAGS=${OLLAMA_CGO_FLAGS}" -- \
        -ldflags "-X github.com/ollama/ollama/version.Version=${OLLAMA_VERSION}" \
        "${OLLAMA_MODULE}@v${OLLAMA_VERSION}" \
        || unavailable "go install ${OLLAMA_MODULE}@v${OLLAMA_VERSION} failed (log ${PEERS_WORK}/build-ollama-${OLLAMA_VERSION}.log)"
    DONE+=("ollama-bin=built")
}

build_registry_bin() {
    local stamp="registry ${REGISTRY_VERSION} static"
    if [[ -x "${REGISTRY_BIN}" && "$(cat "${REGISTRY_DIR}/.stamp" 2>/dev/null)" == "${stamp}" ]]; then
        DONE+=("registry-bin=cached"); return
    fi
    need_go "the registry"
    log "go install ${REGISTRY_MODULE}@v${REGISTRY_VERSION} (static, CGO_ENABLED=0)"
    go_install "${REGISTRY_DIR}" "${stamp}" "${PEERS_WORK}/build-registry-${REGISTRY_VERSION}.log" \
        CGO_ENABLED=0 -- "${REGISTRY_MODULE}@v${REGISTRY_VERSION}" \
        || unavailable "go install ${REGISTRY_MODULE}@v${REGISTRY_VERSION} failed (log ${PEERS_WORK}/build-registry-${REGISTRY_VERSION}.log)"
    DONE+=("registry-bin=built")
}

# ---------------------------------------------------------------------------------------------
# Images (built only when missing or stale)
# ---------------------------------------------------------------------------------------------
# The Debian mirror this machine's apt uses, found as scripts/test-env.sh's debian_mirror finds it
# (same logic, kept in step with it): the first `URIs:` of a deb822 source that is not the
# security archive, else the first `deb` line of sources.list. Never a hard-coded host.
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

base_image_name() {
    # The base's tag is a hash of what makes it: suite, packages, the cleanup below.
    local h
    h=$(printf '%s\n' "${OLLAMA_BASE_SUITE}" "${OLLAMA_BASE_PACKAGES}" "minbase" "cleanup-v1" | hash16 | cut -c1-12)
    printf 'stackpilot-test/ollama-base:%s-%s\n' "${OLLAMA_BASE_SUITE}" "${h}"
}

build_ollama_base() {
    local base=$1
    if docker image inspect "${base}" >/dev/null 2>&1; then return; fi
    [[ $(id -u) -eq 0 ]] || unavailable "debootstrap of the Ollama image's rootfs needs root"
    command -v debootstrap >/dev/null || apt_install debootstrap
    local mirror root="${PEERS_WORK}/rootfs-ollama"
    mirror=$(debian_mirror) || unavailable "no Debian mirror in this machine's apt configuration (/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list)"
    rm -rf "${root}"; mkdir -p "${root}"
    log "debootstrap --variant=minbase --include=${OLLAMA_BASE_PACKAGES} ${OLLAMA_BASE_SUITE} from ${mirror}"
    debootstrap --variant=minbase --include="${OLLAMA_BASE_PACKAGES}" "${OLLAMA_BASE_SUITE}" "${root}" "${mirror}" \
        >"${PEERS_WORK}/debootstrap-ollama.log" 2>&1 \
        || { tail -n 20 "${PEERS_WORK}/debootstrap-ollama.log" >&2; unavailable "debootstrap of the Ollama rootfs failed"; }
    rm -rf "${root}/var/cache/apt/archives/"*.deb "${root}/var/lib/apt/lists/"* \
        "${root}/usr/share/doc/"* "${root}/usr/share/man/"* "${root}/usr/share/info/"* \
        "${root}/usr/share/locale/"*
    tar -C "${root}" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        - "${base}" >/dev/null || unavailable "docker import of the Ollama rootfs failed"
    rm -rf "${root}"
}

# docker_build IMAGE CONTEXT LABEL [BUILD-ARGS...]: the classic builder (20.10 engine, no buildx).
docker_build() {
    local image=$1 ctx=$2 label=$3; shift 3
    local errlog="${PEERS_WORK}/build-${image//[^a-zA-Z0-9]/_}.log"
    if ! DOCKER_BUILDKIT=0 docker build -q "$@" --label "io.stackpilot.test.src=${label}" -t "${image}" "${ctx}" >"${errlog}" 2>&1; then
        grep -v -e DEPRECATED -e 'legacy builder' -e BuildKit -e 'environment-variable' "${errlog}" | tail -n 30 >&2
        return 1
    fi
    # The image this one replaced (stale recipe) is now dangling: drop it, and only it.
    docker image prune -f --filter "label=io.stackpilot.test.src" >/dev/null 2>&1 || true
}

image_label() { docker image inspect -f '{{index .Config.Labels "io.stackpilot.test.src"}}' "$1" 2>/dev/null || true; }

build_ollama_image() {
    local base want
    base=$(base_image_name)
    # Key: version + recipe + the base's name (its recipe hash) + the stamp of the binary.
    want=$( { echo "${OLLAMA_VERSION}"; src_hash ollama; echo "${base}"; cat "${OLLAMA_DIR}/.stamp"; } | hash16)
    if [[ "$(image_label "${OLLAMA_IMAGE}")" == "${want}" ]]; then DONE+=("${OLLAMA_IMAGE}=cached"); return; fi
    step "ollama base rootfs" build_ollama_base "${base}"
    local ctx="${PEERS_WORK}/ctx-ollama"
    rm -rf "${ctx}"; mkdir -p "${ctx}"
    cp -a "${IMAGES_SRC}/ollama/." "${ctx}/"
    cp "${OLLAMA_BIN}" "${ctx}/ollama"
    docker_build "${OLLAMA_IMAGE}" "${ctx}" "${want}" --build-arg "BASE=${base}" \
        || unavailable "docker build ${OLLAMA_IMAGE} failed"
    rm -rf "${ctx}"
    DONE+=("${OLLAMA_IMAGE}=built")
}

is_static() {
    local out
    out=$(LC_ALL=C ldd "$1" 2>&1 || true)
    [[ "${out}" == *"not a dynamic executable"* || "${out}" == *"statically linked"* ]]
}

static_busybox() {
    # The host's busybox when it is static (package busybox-static; test-env.sh installs it).
    local b
    for b in /bin/busybox /usr/bin/busybox; do
        if [[ -x "${b}" ]] && is_static "${b}"; then echo "${b}"; return 0; fi
    done
    return 1
}

build_registry_image() {
    local want bb
    bb=$(static_busybox) || { apt_install busybox-static; bb=$(static_busybox); } \
        || unavailable "no static busybox (package busybox-static) for ${REGISTRY_IMAGE}"
    want=$( { echo "${REGISTRY_VERSION}"; src_hash registry; cat "${REGISTRY_DIR}/.stamp"; sha256sum <"${bb}"; } | hash16)
    if [[ "$(image_label "${REGISTRY_IMAGE}")" == "${want}" ]]; then DONE+=("${REGISTRY_IMAGE}=cached"); return; fi
    is_static "${REGISTRY_BIN}" || unavailable "${REGISTRY_BIN} is not static (a FROM scratch image needs it)"
    local ctx="${PEERS_WORK}/ctx-registry"
    rm -rf "${ctx}"; mkdir -p "${ctx}"
    cp -a "${IMAGES_SRC}/registry/." "${ctx}/"
    cp "${REGISTRY_BIN}" "${ctx}/registry"
    cp "${bb}" "${ctx}/busybox"
    docker_build "${REGISTRY_IMAGE}" "${ctx}" "${want}" || unavailable "docker build ${REGISTRY_IMAGE} failed"
    rm -rf "${ctx}"
    DONE+=("${REGISTRY_IMAGE}=built")
}

cmd_build() {
    step "ollama binary" build_ollama_bin
    step "registry binary" build_registry_bin
    if docker_answers; then
        HAVE_DOCKER=1
        step "image ollama" build_ollama_image
        step "image registry" build_registry_image
    else
        HAVE_DOCKER=0
        if [[ "${CI:-}" == "true" ]]; then
            unavailable "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-<default>}): cannot build ${OLLAMA_IMAGE}"
        fi
        log "no Docker engine answers: images not built (binaries only)"
    fi
}

# ---------------------------------------------------------------------------------------------
# Registry on 127.0.0.1, with its blob server
# ---------------------------------------------------------------------------------------------
# Ollama 0.11.x pulls a blob only through a redirect to ANOTHER host name (it asks the registry
# for the blob, expects 307 + Location, then fetches ranges from there); a registry that serves
# the blob itself (200) fails the pull with "http: no Location header in response"
# (ollama/ollama#7244, #9737). So the registry uses Distribution's `redirect` storage middleware:
# blob GETs on 127.0.0.1:PORT answer 307 to http://localhost:BLOBS_PORT/<storage path>, where
# busybox httpd (Range support) serves the same storage directory, read-only, on 127.0.0.1.
registry_addr() { sed -n 1p "${REG_ADDRFILE}" 2>/dev/null; }
blobs_addr() { sed -n 2p "${REG_ADDRFILE}" 2>/dev/null; }

find_busybox() {
    local b
    for b in "$(command -v busybox 2>/dev/null || true)" /bin/busybox /usr/bin/busybox; do
        if [[ -n "${b}" && -x "${b}" ]] && "${b}" httpd --help >/dev/null 2>&1; then echo "${b}"; return 0; fi
    done
    return 1
}

registry_running() {
    pid_is "${REG_PIDFILE}" "${REG_CONFIG}" || return 1
    pid_is "${BLOBS_PIDFILE}" "${REG_DATA}" || return 1
    local addr; addr=$(registry_addr) || return 1
    curl -sf -o /dev/null --max-time 5 "http://${addr}/v2/" || return 1
    curl -s -o /dev/null --max-time 5 "http://$(blobs_addr)/" # any answer: it listens
}

write_registry_config() {
    # $1: host:port of the registry, $2: base URL of the blob server it redirects blob GETs to.
    cat >"${REG_CONFIG}" <<EOF
# written by scripts/peers/ollama.sh: loopback only, plain HTTP, filesystem storage; blob GETs
# answer 307 to the blob server ($2), which serves the same storage (see the script).
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: ${REG_DATA}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
middleware:
  storage:
    - name: redirect
      options:
        baseurl: $2
http:
  addr: $1
EOF
}

next_free_port() {
    # next_free_port FROM: the first port >= FROM (up to +99) nothing listens on.
    local port=$1 last=$(($1 + 99))
    while ! port_free "${port}"; do
        port=$((port + 1))
        [[ ${port} -le ${last} ]] || return 1
    done
    echo "${port}"
}

cmd_registry_start() {
    mkdir -p "${REG_DATA}"
    if registry_running; then
        DONE+=("registry=running at $(registry_addr)"); return
    fi
    # A half-started pair (one of the two died): stop what is left, start both afresh.
    stop_recorded "${REG_PIDFILE}" "${REG_CONFIG}" registry || true
    stop_recorded "${BLOBS_PIDFILE}" "${REG_DATA}" "blob server" || true
    [[ -x "${REGISTRY_BIN}" ]] || unavailable "no registry binary at ${REGISTRY_BIN} (run: $0 build)"
    local bb port bport
    bb=$(find_busybox) || {
        apt_install busybox-static
        bb=$(find_busybox) || unavailable "no busybox with httpd (package busybox-static) for the registry's blob server"
    }
    port=$(next_free_port "${REG_PORT_DEFAULT}") || unavailable "no free port on 127.0.0.1 from ${REG_PORT_DEFAULT} for the registry"
    bport=$(next_free_port $((port + 1))) || unavailable "no free port on 127.0.0.1 after ${port} for the blob server"
    write_registry_config "127.0.0.1:${port}" "http://localhost:${bport}/"
    daemon "${BLOBS_PIDFILE}" "${REG_DIR}/blobs.log" "${bb}" httpd -f -p "127.0.0.1:${bport}" -h "${REG_DATA}"
    daemon "${REG_PIDFILE}" "${REG_LOG}" env OTEL_TRACES_EXPORTER=none "${REGISTRY_BIN}" serve "${REG_CONFIG}"
    printf '127.0.0.1:%s\n127.0.0.1:%s\n' "${port}" "${bport}" >"${REG_ADDRFILE}"
    for _ in $(seq 1 50); do
        if registry_running; then
            DONE+=("registry=started at 127.0.0.1:${port} (pid $(cat "${REG_PIDFILE}"); blobs 127.0.0.1:${bport} pid $(cat "${BLOBS_PIDFILE}"))")
            return
        fi
        sleep 0.2
    done
    tail -n 20 "${REG_LOG}" >&2 || true
    unavailable "the registry did not answer on 127.0.0.1:${port} within 10 s (log ${REG_LOG})"
}

daemon() {
    # daemon PIDFILE LOG CMD...: CMD in its own session, outliving this script (tests use it):
    # stdin /dev/null, output appended to LOG, and no other inherited descriptor (not our lock,
    # not a caller's pipe that someone waits on to close). Its pid goes to PIDFILE.
    local pidfile=$1 logf=$2; shift 2
    (
        for fd in /proc/self/fd/*; do
            fd=${fd##*/}
            if [[ ${fd} -gt 2 ]]; then eval "exec ${fd}>&-" 2>/dev/null || true; fi
        done
        exec setsid "$@" </dev/null >>"${logf}" 2>&1
    ) &
    echo $! >"${pidfile}"
}

stop_recorded() {
    # stop_recorded PIDFILE WORD NAME: stop the recorded process if its command line has WORD.
    local pid
    if ! pid_is "$1" "$2"; then rm -f "$1"; return 1; fi
    pid=$(cat "$1")
    kill -TERM "${pid}"
    for _ in $(seq 1 50); do [[ -d "/proc/${pid}" ]] || break; sleep 0.2; done
    if [[ -d "/proc/${pid}" ]]; then kill -KILL "${pid}" || true; fi
    rm -f "$1"
    log "$3 pid ${pid} stopped"
}

cmd_registry_stop() {
    local any=0
    stop_recorded "${REG_PIDFILE}" "${REG_CONFIG}" registry && any=1
    stop_recorded "${BLOBS_PIDFILE}" "${REG_DATA}" "blob server" && any=1
    rm -f "${REG_ADDRFILE}"
    if [[ ${any} -eq 0 ]]; then log "no registry recorded in ${REG_DIR} is running; nothing to stop"; fi
    log "storage ${REG_DATA} kept"
}

cmd_registry_status() {
    if registry_running; then
        echo "running pid $(cat "${REG_PIDFILE}") at $(registry_addr), blob server pid $(cat "${BLOBS_PIDFILE}") at $(blobs_addr) (storage ${REG_DATA})"
    else
        echo "not running"
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------
# A private `ollama serve` on 127.0.0.1 (its own models dir and HOME, so its key pair too)
# ---------------------------------------------------------------------------------------------
SERVE_PID=""
SERVE_PORT=""
start_private_serve() {
    # start_private_serve DIR: serve from DIR/models, HOME=DIR/home, log DIR/serve.log.
    local dir=$1
    mkdir -p "${dir}/models" "${dir}/home"
    SERVE_PORT=$(next_free_port 21434) || unavailable "no free port on 127.0.0.1 for a private ollama serve"
    HOME="${dir}/home" OLLAMA_HOST="127.0.0.1:${SERVE_PORT}" OLLAMA_MODELS="${dir}/models" \
        "${OLLAMA_BIN}" serve >"${dir}/serve.log" 2>&1 9>&- &
    SERVE_PID=$!
    trap stop_private_serve EXIT
    for _ in $(seq 1 100); do
        curl -sf -o /dev/null "http://127.0.0.1:${SERVE_PORT}/api/version" && return 0
        [[ -d "/proc/${SERVE_PID}" ]] || break
        sleep 0.1
    done
    tail -n 20 "${dir}/serve.log" >&2
    unavailable "a private ollama serve (${OLLAMA_BIN}) did not answer on 127.0.0.1:${SERVE_PORT}"
}

stop_private_serve() {
    if [[ -n "${SERVE_PID}" && -d "/proc/${SERVE_PID}" ]]; then
        kill -TERM "${SERVE_PID}" 2>/dev/null || true
        wait "${SERVE_PID}" 2>/dev/null || true
    fi
    SERVE_PID=""
    trap - EXIT
}

# ---------------------------------------------------------------------------------------------
# Seed: smollm2:135m created by the real Ollama and pushed into the registry
# ---------------------------------------------------------------------------------------------
MANIFEST_ACCEPT='Accept: application/vnd.docker.distribution.manifest.v2+json'

seeded() {
    local addr; addr=$(registry_addr) || return 1
    curl -sf --max-time 10 -H "${MANIFEST_ACCEPT}" "http://${addr}/v2/${SEED_REPO}/manifests/${SEED_TAG}" 2>/dev/null \
        | grep -q "sha256:${SEED_GGUF_SHA256}"
}

cmd_seed() {
    cmd_registry_start
    seed_model
}

seed_model() {
    if seeded; then DONE+=("seed=present (${SEED_REPO}:${SEED_TAG})"); return; fi
    [[ -x "${OLLAMA_BIN}" ]] || unavailable "no ollama binary at ${OLLAMA_BIN} (run: $0 build)"
    local gguf
    gguf=$("${REPO_ROOT}/scripts/fetch-test-model.sh") || unavailable "scripts/fetch-test-model.sh could not provide the test GGUF"
    local sd="${PEERS_WORK}/seed" addr name
    addr=$(registry_addr)
    name="${addr}/${SEED_REPO}:${SEED_TAG}"
    rm -rf "${sd}"; mkdir -p "${sd}/create"
    ln -s "${gguf}" "${sd}/create/model.gguf"
    # The chat template (ChatML) is detected from the GGUF's tokenizer.chat_template.
    printf 'FROM ./model.gguf\n' >"${sd}/create/Modelfile"
    start_private_serve "${sd}"
    (cd "${sd}/create" && HOME="${sd}/home" OLLAMA_HOST="127.0.0.1:${SERVE_PORT}" \
        "${OLLAMA_BIN}" create "${name}" -f Modelfile) >"${sd}/create.log" 2>&1 \
        || { tail -c 2000 "${sd}/create.log" >&2; unavailable "ollama create ${name} failed"; }
    HOME="${sd}/home" OLLAMA_HOST="127.0.0.1:${SERVE_PORT}" "${OLLAMA_BIN}" push --insecure "${name}" \
        >"${sd}/push.log" 2>&1 \
        || { tail -c 2000 "${sd}/push.log" >&2; unavailable "ollama push --insecure ${name} failed"; }
    stop_private_serve
    seeded || unavailable "the registry at ${addr} has no ${SEED_REPO}:${SEED_TAG} with layer sha256:${SEED_GGUF_SHA256} after the push"
    rm -rf "${sd}"
    DONE+=("seed=pushed ${name}")
}

# ---------------------------------------------------------------------------------------------
# Verify: pull the seeded model into an empty real Ollama and generate 8 tokens, on the host
# and (when Docker answers) in a compose stack: Ollama container + registry container.
# ---------------------------------------------------------------------------------------------
check_pull_generate() {
    # check_pull_generate BASE_URL MODEL WHERE
    local base=$1 model=$2 where=$3 out t0 t1 t2
    t0=$(date +%s.%N)
    out=$(curl -s --max-time 300 "${base}/api/pull" -d "{\"model\":\"${model}\",\"insecure\":true,\"stream\":false}")
    [[ "${out}" == '{"status":"success"}' ]] || unavailable "${where}: pull ${model} answered: ${out}"
    t1=$(date +%s.%N)
    out=$(curl -s --max-time 300 "${base}/api/generate" \
        -d "{\"model\":\"${model}\",\"prompt\":\"Say hello.\",\"stream\":false,\"options\":{\"num_predict\":8}}")
    [[ "${out}" == *'"done":true'* && "${out}" == *'"eval_count":8'* ]] \
        || unavailable "${where}: generate with ${model} answered: ${out:0:500}"
    t2=$(date +%s.%N)
    log "$(awk -v a="${t0}" -v b="${t1}" -v c="${t2}" -v w="${where}" 'BEGIN{printf "verify %s: pull %.2fs, load+generate 8 tokens %.2fs", w, b-a, c-b}')"
}

verify_host() {
    local vd="${PEERS_WORK}/verify-host"
    rm -rf "${vd}"
    start_private_serve "${vd}"
    check_pull_generate "http://127.0.0.1:${SERVE_PORT}" "$(registry_addr)/${SEED_REPO}:${SEED_TAG}" "host"
    stop_private_serve
    rm -rf "${vd}"
    DONE+=("verify-host=ok")
}

verify_compose() {
    local vd="${PEERS_WORK}/verify-compose" port project=stackpilot-peers-verify
    docker compose version >/dev/null 2>&1 || unavailable "docker compose (v2) is missing: run scripts/test-env.sh first"
    rm -rf "${vd}"; mkdir -p "${vd}"
    port=$(next_free_port 21534) || unavailable "no free port on 127.0.0.1 for the Ollama container"
    cat >"${vd}/compose.yml" <<EOF
# The pattern for tests: Ollama and the registry on the stack's network; Ollama pulls
# registry:5000/${SEED_REPO}:${SEED_TAG} (insecure); only Ollama's API is published, on 127.0.0.1.
services:
  ollama:
    image: ${OLLAMA_IMAGE}
    pull_policy: never
    ports: ["127.0.0.1:${port}:11434"]
  registry:
    image: ${REGISTRY_IMAGE}
    pull_policy: never
    volumes: ["${REG_DATA}:/var/lib/registry:ro"]
EOF
    VERIFY_DC=(docker compose -p "${project}" -f "${vd}/compose.yml")
    local dc=("${VERIFY_DC[@]}")
    "${dc[@]}" down -v >/dev/null 2>&1 || true
    trap verify_compose_down EXIT   # also when a check below fails and exits
    "${dc[@]}" up -d --wait >"${vd}/up.log" 2>&1 || { tail -n 20 "${vd}/up.log" >&2; unavailable "compose up of ${OLLAMA_IMAGE} + ${REGISTRY_IMAGE} failed"; }
    for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:${port}/api/version" && break; sleep 0.1; done
    check_pull_generate "http://127.0.0.1:${port}" "registry:5000/${SEED_REPO}:${SEED_TAG}" "compose"
    verify_compose_down
    rm -rf "${vd}"
    DONE+=("verify-compose=ok")
}

VERIFY_DC=()
verify_compose_down() {
    if [[ ${#VERIFY_DC[@]} -gt 0 ]]; then "${VERIFY_DC[@]}" down -v >/dev/null 2>&1 || true; fi
    VERIFY_DC=()
    trap - EXIT
}

cmd_verify() {
    cmd_seed
    step "verify host" verify_host
    if docker_answers; then
        step "verify compose" verify_compose
    elif [[ "${CI:-}" == "true" ]]; then
        unavailable "no Docker engine answers: cannot verify ${OLLAMA_IMAGE}"
    fi
}

# ---------------------------------------------------------------------------------------------
env_lines() {
    echo "export STACKPILOT_TEST_OLLAMA_BIN=${OLLAMA_BIN}"
    echo "export STACKPILOT_TEST_OLLAMA_VERSION=${OLLAMA_VERSION}"
    if [[ ${HAVE_DOCKER:-0} -eq 1 ]]; then
        echo "export STACKPILOT_TEST_OLLAMA_IMAGE=${OLLAMA_IMAGE}"
        echo "export STACKPILOT_TEST_REGISTRY_IMAGE=${REGISTRY_IMAGE}"
    fi
    echo "export STACKPILOT_TEST_REGISTRY=$(registry_addr)"
    echo "export STACKPILOT_TEST_REGISTRY_BLOBS=$(blobs_addr)"
    echo "export STACKPILOT_TEST_REGISTRY_BIN=${REGISTRY_BIN}"
    echo "export STACKPILOT_TEST_REGISTRY_MODEL=${SEED_REPO}:${SEED_TAG}"
    echo "export STACKPILOT_TEST_REGISTRY_DATA=${REG_DATA}"
}

write_env() {
    mkdir -p "${SP_RUN_DIR}"
    local tmp="${ENV_FILE}.tmp.$$"
    { echo "# written by scripts/peers/ollama.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ)"; env_lines; } >"${tmp}"
    mv "${tmp}" "${ENV_FILE}"
}

with_lock() {
    mkdir -p "${PEERS_WORK}" "${PEERS_CACHE}" 2>/dev/null || unavailable "cannot create ${PEERS_WORK} or ${PEERS_CACHE} (uid $(id -u))"
    { exec 9>>"${LOCK_FILE}"; } 2>/dev/null || unavailable "cannot open ${LOCK_FILE}"
    flock -w 1800 9 || unavailable "timed out waiting for another scripts/peers/ollama.sh run"
}

main() {
    local t0; t0=$(date +%s.%N)
    DONE=()
    HAVE_DOCKER=0
    case "${1:-start}" in
        build) with_lock; cmd_build ;;
        registry-start) with_lock; step "registry start" cmd_registry_start ;;
        registry-stop) with_lock; cmd_registry_stop; return ;;
        registry-status) cmd_registry_status; return ;;
        seed) with_lock; step "seed" cmd_seed ;;
        verify) with_lock; docker_answers && HAVE_DOCKER=1; cmd_verify ;;
        env) if [[ -r "${ENV_FILE}" ]]; then grep '^export ' "${ENV_FILE}"; else echo "no ${ENV_FILE}; run $0 start" >&2; exit 1; fi; return ;;
        start)
            with_lock
            cmd_build
            step "registry start" cmd_registry_start
            step "seed" seed_model
            write_env
            log "env:     ${ENV_FILE}"
            ;;
        -h|--help|help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; return ;;
        *) echo "usage: $0 [start|build|registry-start|registry-stop|registry-status|seed|verify|env]" >&2; exit 2 ;;
    esac
    [[ ${#DONE[@]} -eq 0 ]] || log "done:    ${DONE[*]}"
    log "$(awk -v a="${t0}" -v b="$(date +%s.%N)" 'BEGIN{printf "ready in %.2fs", b-a}')"
}

main "$@"
