# shellcheck shell=bash
# The images the user-shaped stacks and compose/examples/ need, sourced by scripts/test-env.sh
# (its log, step, unavailable, need_root, apt_install, debian_mirror, legacy_build, src_hash and
# image_current are in scope). Built without any registry, each only when missing or stale:
#   stackpilot-test/redis:7            Redis 7.0 from Debian (redis-server), like the official image
#   stackpilot-test/python:3.11        Debian's Python 3.11 (python3, python-is-python3)
#   stackpilot-test/postgres-hub:15    Postgres 15 that initialises from POSTGRES_* like the official image
#   stackpilot-test/qdrant-standin:1   a Qdrant stand-in (Python, Qdrant's REST shapes)
# and tags them under the names compose files write (redis:7-alpine, postgres:15-alpine,
# python:3.11-slim, ...), plus busybox:stable (stackpilot's default helper image) from the
# busybox test image and ollama/ollama:standin from the Ollama stand-in. Cold: two debootstrap runs (about a minute each) and four small builds;
# warm: a few `docker image inspect` calls.

REDIS_BASE_IMAGE=stackpilot-test/redis-base:1
PYTHON_BASE_IMAGE=stackpilot-test/python-base:1
REDIS_IMAGE=stackpilot-test/redis:7
PYTHON_IMAGE=stackpilot-test/python:3.11
POSTGRES_HUB_IMAGE=stackpilot-test/postgres-hub:15
QDRANT_STANDIN_IMAGE=stackpilot-test/qdrant-standin:1

# build_debian_base IMAGE PACKAGES: a debootstrap minbase bookworm rootfs with PACKAGES
# (comma-separated), imported as IMAGE; only when IMAGE is missing.
build_debian_base() {
    local image=$1 packages=$2
    if image_exists "${image}"; then return; fi
    need_root "debootstrap"
    command -v debootstrap >/dev/null || apt_install debootstrap
    local root="${WORK_DIR}/rootfs-${image//[^a-zA-Z0-9]/_}"
    rm -rf "${root}"; mkdir -p "${root}"
    local mirror
    mirror=$(debian_mirror) || unavailable "no Debian mirror in this machine's apt configuration (/etc/apt/sources.list.d/*.sources, /etc/apt/sources.list)"
    log "debootstrap minbase bookworm + ${packages} from ${mirror} (about a minute)"
    local dlog="${WORK_DIR}/debootstrap-${image//[^a-zA-Z0-9]/_}.log"
    debootstrap --variant=minbase --include="${packages}" bookworm "${root}" "${mirror}" >"${dlog}" 2>&1 \
        || { tail -n 20 "${dlog}" >&2; unavailable "debootstrap of ${image} failed"; }
    rm -rf "${root}/var/cache/apt/archives/"*.deb "${root}/var/lib/apt/lists/"* \
        "${root}/usr/share/doc/"* "${root}/usr/share/man/"* "${root}/usr/share/info/"* \
        "${root}/usr/share/locale/"*
    tar -C "${root}" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        - "${image}" >/dev/null || unavailable "docker import of ${image} failed"
    rm -rf "${root}"
}

# tag_as SOURCE NAME...: point each NAME at SOURCE's image id (re-tagged when it points elsewhere).
tag_as() {
    local src=$1; shift
    local id name
    id=$(docker image inspect -f '{{.Id}}' "${src}") || unavailable "no image ${src} to tag"
    for name in "$@"; do
        if [[ "$(docker image inspect -f '{{.Id}}' "${name}" 2>/dev/null)" != "${id}" ]]; then
            docker tag "${src}" "${name}" || unavailable "docker tag ${src} ${name} failed"
        fi
    done
}

build_redis() {
    if ! image_current "${REDIS_IMAGE}" redis; then
        step "redis base rootfs" build_debian_base "${REDIS_BASE_IMAGE}" redis-server
        legacy_build "${REDIS_IMAGE}" "${IMAGES_SRC}/redis" redis || unavailable "docker build ${REDIS_IMAGE} failed"
        IMAGES_DONE+=("${REDIS_IMAGE}=built")
    else
        IMAGES_DONE+=("${REDIS_IMAGE}=cached")
    fi
    tag_as "${REDIS_IMAGE}" redis:7-alpine redis:7
}

build_python() {
    if ! image_current "${PYTHON_IMAGE}" python; then
        step "python base rootfs" build_debian_base "${PYTHON_BASE_IMAGE}" python3,python-is-python3
        legacy_build "${PYTHON_IMAGE}" "${IMAGES_SRC}/python" python || unavailable "docker build ${PYTHON_IMAGE} failed"
        IMAGES_DONE+=("${PYTHON_IMAGE}=built")
    else
        IMAGES_DONE+=("${PYTHON_IMAGE}=cached")
    fi
    tag_as "${PYTHON_IMAGE}" python:3.11-slim python:3.11-slim-bookworm
}

build_postgres_hub() {
    if ! image_current "${POSTGRES_HUB_IMAGE}" postgres-hub; then
        step "postgres base rootfs" build_pg_base
        legacy_build "${POSTGRES_HUB_IMAGE}" "${IMAGES_SRC}/postgres-hub" postgres-hub || unavailable "docker build ${POSTGRES_HUB_IMAGE} failed"
        IMAGES_DONE+=("${POSTGRES_HUB_IMAGE}=built")
    else
        IMAGES_DONE+=("${POSTGRES_HUB_IMAGE}=cached")
    fi
    tag_as "${POSTGRES_HUB_IMAGE}" postgres:15 postgres:15-alpine
}

# After build_python (its base); rebuilt when its sources or the python image change.
build_qdrant_standin() {
    local want have
    want="$(src_hash qdrant-standin)-$(docker image inspect -f '{{.Id}}' "${PYTHON_IMAGE}" 2>/dev/null | cut -c8-19)"
    have=$(docker image inspect -f '{{index .Config.Labels "io.stackpilot.test.src"}}' "${QDRANT_STANDIN_IMAGE}" 2>/dev/null || true)
    if [[ "${have}" == "${want}" ]]; then IMAGES_DONE+=("${QDRANT_STANDIN_IMAGE}=cached"); return; fi
    local errlog="${WORK_DIR}/build-qdrant-standin.log"
    if ! DOCKER_BUILDKIT=0 docker build -q --label "io.stackpilot.test.src=${want}" -t "${QDRANT_STANDIN_IMAGE}" "${IMAGES_SRC}/qdrant-standin" >"${errlog}" 2>&1; then
        grep -v -e DEPRECATED -e 'legacy builder' -e BuildKit -e 'environment-variable' "${errlog}" | tail -n 30 >&2
        unavailable "docker build ${QDRANT_STANDIN_IMAGE} failed"
    fi
    docker image prune -f --filter "label=io.stackpilot.test.src" >/dev/null 2>&1 || true
    IMAGES_DONE+=("${QDRANT_STANDIN_IMAGE}=built")
}

build_stack_images() {
    step "image redis" build_redis
    step "image python" build_python
    step "image postgres-hub" build_postgres_hub
    step "image qdrant-standin" build_qdrant_standin
    tag_as "${BUSYBOX_IMAGE}" busybox:stable
    # The Ollama stand-in under the official repository, with a tag that says what it is.
    tag_as "${OLLAMA_STANDIN_IMAGE}" ollama/ollama:standin
}

write_stack_env() {
    echo "export STACKPILOT_TEST_REDIS_IMAGE=${REDIS_IMAGE}"
    echo "export STACKPILOT_TEST_PYTHON_IMAGE=${PYTHON_IMAGE}"
    echo "export STACKPILOT_TEST_POSTGRES_HUB_IMAGE=${POSTGRES_HUB_IMAGE}"
    echo "export STACKPILOT_TEST_QDRANT_STANDIN_IMAGE=${QDRANT_STANDIN_IMAGE}"
}
