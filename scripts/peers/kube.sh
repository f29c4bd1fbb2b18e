#!/usr/bin/env bash
# A real Kubernetes test cluster on this machine, built from Go modules: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and either a real kubelet (containerd 1.6 from Debian,
# CNI bridge from Debian's containernetworking-plugins) or kwok-simulated nodes.
#
# Usage:
#   scripts/peers/kube.sh build    build/install every peer into the cache (skips what is cached)
#   scripts/peers/kube.sh start    start the cluster (no-op when it already runs); print the env
#   scripts/peers/kube.sh stop     stop what start started (by recorded pid only), wipe cluster state
#   scripts/peers/kube.sh status   say what runs
#   scripts/peers/kube.sh env      print `export K=V` lines (KUBECONFIG, context, node mode)
#   scripts/peers/kube.sh selftest busybox Deployment + postgres StatefulSet with a PVC; logs, exec pg_dump
#
# Exit status: 0 ok; 3 not available outside CI (callers skip, reason on stderr);
# 1 anything missing under CI=true (fail loudly).
#
# Everything listens on 127.0.0.1 only. Nothing built or generated here lives in the repository:
#   binaries, module/build caches, venv:  /var/cache/stackpilot-peers/   (kept; keyed by version;
#                                         STACKPILOT_PEERS_CACHE overrides, as for the other peers)
#   certificates, etcd data, logs, pids:  /run/stackpilot-kube/          (wiped by stop)
#   containerd image store (image cache): /var/lib/stackpilot-kube/      (kept)
#
# Knobs (environment): STACKPILOT_KUBE_NODE_MODE=auto|kubelet|kwok (auto: kubelet, else kwok),
# STACKPILOT_K8S_VERSION (default below; the recipe is the same for v1.34.x, not built here), STACKPILOT_KUBE_IMAGES
# (space-separated images copied from the test dockerd into containerd at start; default: the
# test busybox and postgres images).

if [[ "${BASH_SOURCE[0]}" != "${0}" ]]; then
    echo "kube.sh: run it, don't source it (eval \"\$(scripts/peers/kube.sh env)\")" >&2
    return 2
fi
set -euo pipefail

# ---------------------------------------------------------------------------------------------
# Versions (each one checked against the Go module proxy / PyPI; see the notes in README)
# ---------------------------------------------------------------------------------------------
K8S_VERSION="${STACKPILOT_K8S_VERSION:-v1.35.8}"      # newest v1.35.x the proxy serves (1.35.9/10: 403)
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
CRICTL_VERSION=v1.34.0                                  # cri-tools v1.35.0: 403 on the proxy
KVALIDATE_VERSION=1.37.0                                # PyPI kubernetes-validate (schemas to 1.37)
PAUSE_TAG=registry.k8s.io/pause:3.10.1                  # the sandbox image 1.34/1.35 expect

CACHE="${STACKPILOT_PEERS_CACHE:-/var/cache/stackpilot-peers}"   # shared with scripts/peers/*.sh
GO_MODCACHE="${CACHE}/go/mod"
GO_BUILDCACHE="${CACHE}/go/build"
K8S_DIR="${CACHE}/kubernetes-${K8S_VERSION}"
K8S_BIN="${K8S_DIR}/bin"
ETCD_DIR="${CACHE}/etcd-${ETCD_VERSION}"
KWOK_DIR="${CACHE}/kwok-${KWOK_VERSION}"
HELM_DIR="${CACHE}/helm-${HELM_VERSION}"
CRICTL_DIR="${CACHE}/crictl-${CRICTL_VERSION}"
KVALIDATE_DIR="${CACHE}/kubernetes-validate-${KVALIDATE_VERSION}"
PAUSE_DIR="${CACHE}/pause-${K8S_VERSION}"
TIMES_LOG="${CACHE}/build-times.log"

RUN_DIR=/run/stackpilot-kube
STATE_DIR=/var/lib/stackpilot-kube
LOCK_FILE=/run/stackpilot-kube.lock
TEST_ENV_FILE=/run/stackpilot-test/env

# Ports (all on 127.0.0.1; none of them a default).
ETCD_CLIENT_PORT=23379
ETCD_PEER_PORT=23380
APISERVER_PORT=26443
CM_PORT=26257         # kube-controller-manager secure port (default 10257)
SCHED_PORT=26259      # kube-scheduler secure port (default 10259)
KUBELET_PORT=26250    # kubelet (default 10250)
KUBELET_HEALTHZ_PORT=26248
KWOK_PORT=26251       # kwok's own metrics/healthz server

CONTEXT=stackpilot-test
CLUSTER_NAME=stackpilot-test
NODE_NAME=stackpilot-node-0
POD_SUBNET=10.213.0.0/24          # CNI bridge spk0 (docker: 172.17/16; podman: 10.88/16)
SERVICE_CIDR=10.214.0.0/24
BRIDGE=spk0

SCRIPT_T0=$(date +%s.%N)

log() { printf 'kube.sh: %s\n' "$*" >&2; }

# Not available: fail under CI, skip (exit 3) elsewhere.
unavailable() {
    if [[ "${CI:-}" == "true" ]]; then
        printf 'kube.sh: FATAL (CI=true): %s\n' "$*" >&2
        exit 1
    fi
    printf 'kube.sh: WARNING: %s; Kubernetes tests will be skipped (exit 3)\n' "$*" >&2
    exit 3
}

need_root() { [[ $(id -u) -eq 0 ]] || unavailable "$1 needs root (running as uid $(id -u))"; }

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

APT_UPDATED=0
apt_install() {
    local missing=() p
    for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    need_root "installing ${missing[*]}"
    command -v apt-get >/dev/null || unavailable "apt-get not found; cannot install ${missing[*]}"
    if [[ ${APT_UPDATED} -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null \
            || unavailable "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null || unavailable "apt-get install ${missing[*]} failed"
}

# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------

# measure NAME CMD...: run CMD under `nice -n 10`; log wall time, the largest single process
# (GNU time's max RSS) and the peak of the summed RSS of the whole process tree (sampled every
# 0.5 s) to stderr and to ${TIMES_LOG}.
measure() {
    local name=$1; shift
    local t0 tf rc=0 peak=0 sum pid
    t0=$(date +%s.%N)
    tf=$(mktemp)
    nice -n 10 /usr/bin/time -f '%M' -o "${tf}" "$@" &
    pid=$!
    while kill -0 "${pid}" 2>/dev/null; do
        sum=$(ps -e -o pid=,ppid=,rss= | awk -v root="${pid}" '
            { par[$1]=$2; rss[$1]=$3 }
            END { s=0; for (p in par) { q=p; while (q != "" && q != 0 && q != 1) { if (q == root) { s += rss[p]; break } q = par[q] } } print s }')
        (( sum > peak )) && peak=${sum}
        sleep 0.5
    done
    wait "${pid}" || rc=$?
    local secs maxrss
    secs=$(elapsed "${t0}")
    maxrss=$(tail -n1 "${tf}" 2>/dev/null | grep -E '^[0-9]+$' || echo 0)
    rm -f "${tf}"
    local line
    line=$(printf '%s %-28s rc=%d wall=%7.1fs peak_tree_rss=%5d MiB max_proc_rss=%5d MiB' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${name}" "${rc}" "${secs}" $((peak / 1024)) $((maxrss / 1024)))
    log "${line}"
    mkdir -p "${CACHE}" && echo "${line}" >>"${TIMES_LOG}"
    return "${rc}"
}

go_env() {
    command -v go >/dev/null || unavailable "go not found (the Go toolchain builds every peer)"
    export GOMODCACHE="${GO_MODCACHE}" GOCACHE="${GO_BUILDCACHE}" CGO_ENABLED=0 GOTOOLCHAIN=local
    mkdir -p "${GOMODCACHE}" "${GOCACHE}"
}

# The kubernetes wrapper module: require k8s.io/kubernetes, replace every staging module it
# requires with its published v0.N.P release (its own go.mod maps them to ./staging).
k8s_wrapper() {
    local src="${K8S_DIR}/src" staging="v0.${K8S_VERSION#v1.}"
    [[ -f "${src}/go.mod" ]] && return 0
    mkdir -p "${src}"
    local mod
    mod=$(cd "${src}" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
    [[ -r "${mod}" ]] || { rm -rf "${src}"; unavailable "go mod download k8s.io/kubernetes@${K8S_VERSION} failed"; }
    {
        echo "module stackpilot.invalid/kubewrap"
        echo
        echo "go $(sed -n 's/^go //p' "${mod}")"
        echo
        echo "require k8s.io/kubernetes ${K8S_VERSION}"
        echo
        # Only staging modules that k8s.io/kubernetes itself requires (it requires them at v0.0.0).
        local m
        for m in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "${mod}"); do
            if grep -qE "^\s+${m//./\\.} v0\.0\.0" "${mod}"; then
                echo "replace ${m} => ${m} ${staging}"
            fi
        done
        # Its other replace directives (none in 1.34/1.35 besides staging) would be ignored by
        # the wrapper: list them loudly instead.
    } >"${src}/go.mod"
    local other
    other=$(awk '$2 == "=>" && $3 !~ /^\.\/staging\// {print}' "${mod}" | grep -v '^replace (' || true)
    [[ -z "${other}" ]] || log "WARNING: k8s.io/kubernetes ${K8S_VERSION} has non-staging replace directives: ${other}"
}

k8s_ldflags() {
    local v=${K8S_VERSION#v} major minor
    major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
    local p=k8s.io/component-base/version
    printf '%s' "-s -w -X ${p}.gitVersion=${K8S_VERSION} -X ${p}.gitMajor=${major} -X ${p}.gitMinor=${minor} -X ${p}.gitTreeState=clean -X ${p}.buildDate=1970-01-01T00:00:00Z"
}

# k8s_build NAME CMD...: go build the named cmd/ packages into ${K8S_BIN} unless all are there.
k8s_build() {
    local label=$1; shift
    local c missing=()
    for c in "$@"; do [[ -x "${K8S_BIN}/${c}" ]] || missing+=("${c}"); done
    if [[ ${#missing[@]} -eq 0 ]]; then BUILT+=("${label}=cached"); return 0; fi
    k8s_wrapper
    mkdir -p "${K8S_BIN}"
    local pkgs=()
    for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${c}"); done
    log "go build ${missing[*]} (k8s.io/kubernetes ${K8S_VERSION}; cold: tens of minutes)"
    local tmp="${K8S_DIR}/bin.tmp"
    rm -rf "${tmp}"; mkdir -p "${tmp}"
    if ! (cd "${K8S_DIR}/src" && GOFLAGS="-mod=mod -buildvcs=false" measure "k8s ${K8S_VERSION} ${label}" \
            go build -trimpath -ldflags "$(k8s_ldflags)" -o "${tmp}/" "${pkgs[@]}") >"${K8S_DIR}/build-${label}.log" 2>&1; then
        tail -n 30 "${K8S_DIR}/build-${label}.log" >&2
        unavailable "go build of ${missing[*]} from k8s.io/kubernetes ${K8S_VERSION} failed (log ${K8S_DIR}/build-${label}.log)"
    fi
    grep 'kube.sh: ' "${K8S_DIR}/build-${label}.log" >&2 || true
    mv "${tmp}/"* "${K8S_BIN}/"; rmdir "${tmp}"
    BUILT+=("${label}=built")
}

build_etcd() {
    if [[ -x "${ETCD_DIR}/bin/etcd" ]]; then BUILT+=("etcd=cached"); return 0; fi
    local src="${ETCD_DIR}/src"
    mkdir -p "${src}" "${ETCD_DIR}/bin"
    # server/v3 has replace directives (../api, ...): a wrapper module resolves them as releases.
    [[ -f "${src}/go.mod" ]] || (cd "${src}" && go mod init stackpilot.invalid/etcdwrap >/dev/null 2>&1)
    if ! (cd "${src}" && GOFLAGS="-mod=mod -buildvcs=false" measure "etcd ${ETCD_VERSION}" bash -c "
            go get go.etcd.io/etcd/server/v3@${ETCD_VERSION} &&
            go build -trimpath -ldflags '-s -w' -o '${ETCD_DIR}/bin/etcd' go.etcd.io/etcd/server/v3") >"${ETCD_DIR}/build.log" 2>&1; then
        tail -n 30 "${ETCD_DIR}/build.log" >&2
        unavailable "go build of etcd ${ETCD_VERSION} failed (log ${ETCD_DIR}/build.log)"
    fi
    grep 'kube.sh: ' "${ETCD_DIR}/build.log" >&2 || true
    BUILT+=("etcd=built")
}

# go_install NAME DIR MODULE/PATH@VERSION [LDFLAGS]: `go install` into DIR/bin.
go_install() {
    local name=$1 dir=$2 target=$3 ldflags=${4:-}
    local bin=${target%@*}; bin=${bin##*/}
    if [[ -x "${dir}/bin/${bin}" ]]; then BUILT+=("${name}=cached"); return 0; fi
    mkdir -p "${dir}/bin"
    if ! (cd "${dir}" && GOBIN="${dir}/bin" GOFLAGS="-buildvcs=false" measure "${name}" \
            go install -trimpath -ldflags "-s -w ${ldflags}" "${target}") >"${dir}/build-${bin}.log" 2>&1; then
        tail -n 30 "${dir}/build-${bin}.log" >&2
        unavailable "go install ${target} failed (log ${dir}/build-${bin}.log)"
    fi
    grep 'kube.sh: ' "${dir}/build-${bin}.log" >&2 || true
    BUILT+=("${name}=built")
}

# kwok simulates nothing without Stage objects: the ones kwokctl uses by default, from the
# module's kustomize/stage tree, joined into one config file.
build_kwok_stages() {
    local out="${KWOK_DIR}/stages.yaml"
    [[ -s "${out}" ]] && return 0
    local dir f
    dir=$(cd "${KWOK_DIR}" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')
    [[ -d "${dir}/kustomize/stage" ]] || unavailable "no kustomize/stage in sigs.k8s.io/kwok@${KWOK_VERSION}"
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
             pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
        [[ -r "${dir}/kustomize/stage/${f}" ]] || unavailable "kwok ${KWOK_VERSION} has no stage ${f}"
        echo "---"; echo "# from sigs.k8s.io/kwok@${KWOK_VERSION} kustomize/stage/${f}"
        cat "${dir}/kustomize/stage/${f}"
    done >"${out}.tmp"
    mv "${out}.tmp" "${out}"
}

build_kvalidate() {
    local venv="${KVALIDATE_DIR}/venv"
    if [[ -x "${venv}/bin/kubernetes-validate" ]]; then BUILT+=("kubernetes-validate=cached"); return 0; fi
    command -v python3 >/dev/null || unavailable "python3 not found (kubernetes-validate venv)"
    rm -rf "${venv}"; mkdir -p "${KVALIDATE_DIR}"
    if ! measure "kubernetes-validate ${KVALIDATE_VERSION}" bash -c "
            python3 -m venv '${venv}' && '${venv}/bin/pip' install -q 'kubernetes-validate==${KVALIDATE_VERSION}'" \
            >"${KVALIDATE_DIR}/build.log" 2>&1; then
        tail -n 20 "${KVALIDATE_DIR}/build.log" >&2
        unavailable "pip install kubernetes-validate==${KVALIDATE_VERSION} failed"
    fi
    grep 'kube.sh: ' "${KVALIDATE_DIR}/build.log" >&2 || true
    BUILT+=("kubernetes-validate=built")
}

# kubernetes-validate must work offline (its schemas ship in the wheel): run it without a
# network (unshare -n) on a good Deployment and on one with an unknown field (--strict rejects it).
verify_kvalidate() {
    local v="${KVALIDATE_DIR}/venv/bin/kubernetes-validate" d
    d=$(mktemp -d)
    cat >"${d}/ok.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: sample}
spec:
  replicas: 1
  selector: {matchLabels: {app: sample}}
  template:
    metadata: {labels: {app: sample}}
    spec:
      containers: [{name: c, image: stackpilot-test/busybox:1, imagePullPolicy: Never}]
EOF
    sed 's/^  replicas: 1$/  replicas: 1\n  bogusField: 1/' "${d}/ok.yaml" >"${d}/unknown.yaml"
    local run=()
    unshare -n true 2>/dev/null && run=(unshare -n)
    "${run[@]}" "${v}" --quiet --strict -k 1.35.0 "${d}/ok.yaml" >/dev/null 2>&1 \
        || { rm -rf "${d}"; unavailable "kubernetes-validate --strict -k 1.35.0 rejects a valid Deployment"; }
    if "${run[@]}" "${v}" --quiet --strict -k 1.35.0 "${d}/unknown.yaml" >/dev/null 2>&1; then
        rm -rf "${d}"; unavailable "kubernetes-validate --strict accepts an unknown field"
    fi
    rm -rf "${d}"
    log "kubernetes-validate --strict -k 1.35.0 works${run:+ offline (unshare -n)}"
}

# The pause image: build/pause/linux/pause.c from the kubernetes module, static, in a
# FROM-scratch OCI image (written by hand: no registry, no docker needed) as an OCI archive.
build_pause() {
    local tar="${PAUSE_DIR}/pause.oci.tar"
    if [[ -s "${tar}" ]]; then BUILT+=("pause=cached"); return 0; fi
    command -v gcc >/dev/null || apt_install gcc libc6-dev
    local modsrc
    modsrc=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')
    local c="${modsrc}/build/pause/linux/pause.c"
    [[ -r "${c}" ]] || unavailable "no ${c} in the k8s.io/kubernetes module"
    local w="${PAUSE_DIR}/work"
    rm -rf "${w}"; mkdir -p "${w}/rootfs" "${w}/oci/blobs/sha256"
    local ver
    ver=$(sed -n 's/^TAG ?= //p' "${modsrc}/build/pause/Makefile" 2>/dev/null || true)
    gcc -Os -static -Wall -Werror -DVERSION="v${ver:-unknown}-stackpilot" -o "${w}/rootfs/pause" "${c}" \
        || unavailable "gcc -static pause.c failed (static glibc: libc6-dev)"
    strip "${w}/rootfs/pause" 2>/dev/null || true
    tar -C "${w}/rootfs" --numeric-owner --owner=0 --group=0 --mtime=@0 -cf "${w}/layer.tar" pause
    local ldig lsize cdig csize mdig msize
    ldig=$(sha256sum "${w}/layer.tar" | cut -d' ' -f1); lsize=$(stat -c %s "${w}/layer.tar")
    mv "${w}/layer.tar" "${w}/oci/blobs/sha256/${ldig}"
    cat >"${w}/config.json" <<EOF
{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"],"User":"65535:65535"},"rootfs":{"type":"layers","diff_ids":["sha256:${ldig}"]},"history":[{"created_by":"stackpilot kube.sh: gcc -Os -static build/pause/linux/pause.c"}]}
EOF
    cdig=$(sha256sum "${w}/config.json" | cut -d' ' -f1); csize=$(stat -c %s "${w}/config.json")
    mv "${w}/config.json" "${w}/oci/blobs/sha256/${cdig}"
    cat >"${w}/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:${cdig}","size":${csize}},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:${ldig}","size":${lsize}}]}
EOF
    mdig=$(sha256sum "${w}/manifest.json" | cut -d' ' -f1); msize=$(stat -c %s "${w}/manifest.json")
    mv "${w}/manifest.json" "${w}/oci/blobs/sha256/${mdig}"
    echo '{"imageLayoutVersion":"1.0.0"}' >"${w}/oci/oci-layout"
    cat >"${w}/oci/index.json" <<EOF
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:${mdig}","size":${msize},"annotations":{"io.containerd.image.name":"${PAUSE_TAG}","org.opencontainers.image.ref.name":"${PAUSE_TAG#*:}"}}]}
EOF
    tar -C "${w}/oci" --numeric-owner --owner=0 --group=0 --mtime=@0 -cf "${tar}.tmp" oci-layout index.json blobs
    mv "${tar}.tmp" "${tar}"
    rm -rf "${w}"
    BUILT+=("pause=built")
}

cmd_build() {
    need_root "building into ${CACHE}"
    mkdir -p "${CACHE}"
    { exec 8>>"${CACHE}/build.lock"; } || unavailable "cannot open ${CACHE}/build.lock"
    flock -w 7200 8 || unavailable "timed out waiting for another kube.sh build"
    command -v /usr/bin/time >/dev/null || apt_install time
    go_env
    BUILT=()
    # The essentials first: a control plane without nodes is already useful (kwok).
    k8s_build control-plane kube-apiserver kube-controller-manager kube-scheduler
    build_etcd
    k8s_build node-and-cli kubelet kubectl
    go_install kwok "${KWOK_DIR}" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
    go_install kwokctl "${KWOK_DIR}" "sigs.k8s.io/kwok/cmd/kwokctl@${KWOK_VERSION}" "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
    build_kwok_stages
    go_install helm "${HELM_DIR}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" "-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
    go_install crictl "${CRICTL_DIR}" "sigs.k8s.io/cri-tools/cmd/crictl@${CRICTL_VERSION}" "-X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION}"
    build_kvalidate
    verify_kvalidate
    build_pause
    log "built: ${BUILT[*]}"
    log "build done in $(elapsed "${SCRIPT_T0}")s (times: ${TIMES_LOG})"
}

# ---------------------------------------------------------------------------------------------
# start / stop / status / env
# ---------------------------------------------------------------------------------------------
PKI="${RUN_DIR}/pki"
LOGS="${RUN_DIR}/logs"
PIDS="${RUN_DIR}/pids"
ENV_FILE="${RUN_DIR}/env"
ADMIN_KUBECONFIG="${RUN_DIR}/admin.kubeconfig"
CTRD_DIR="${RUN_DIR}/containerd"
CTRD_SOCK="${CTRD_DIR}/containerd.sock"
CTRD_ROOT="${STATE_DIR}/containerd"
CNI_DIR="${RUN_DIR}/cni"
KUBELET_ROOT="${RUN_DIR}/kubelet"
PV_DIR="${RUN_DIR}/pv"
STORAGE_CLASS=stackpilot-local
PV_COUNT=8
API_URL="https://127.0.0.1:${APISERVER_PORT}"

KUBECTL="${K8S_BIN}/kubectl"
CRICTL="${CRICTL_DIR}/bin/crictl"
# All daemons in start order; stop goes backwards.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kwok)

kc() { "${KUBECTL}" --kubeconfig "${ADMIN_KUBECONFIG}" --context "${CONTEXT}" "$@"; }
cri() { "${CRICTL}" --config "${RUN_DIR}/crictl.yaml" "$@"; }
ctr_k8s() { ctr --address "${CTRD_SOCK}" --namespace k8s.io "$@"; }

# A recorded pid counts only while its command line still names our run dir (a reused pid
# never matches).
pid_of() {
    local f="${PIDS}/$1.pid" pid
    [[ -r "${f}" ]] || return 1
    pid=$(cat "${f}")
    [[ "${pid}" =~ ^[0-9]+$ && -r "/proc/${pid}/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -qF -- "${RUN_DIR}" || return 1
    echo "${pid}"
}

# launch NAME CMD...: start a daemon in its own session, log to ${LOGS}/NAME.log, record its pid.
launch() {
    local name=$1; shift
    mkdir -p "${LOGS}" "${PIDS}"
    # Not a process-group leader, so setsid(1) does not fork: $! is the daemon itself.
    # The lock fds (8, 9) are closed: a daemon must not hold start/stop's lock for its lifetime.
    setsid "$@" </dev/null >>"${LOGS}/${name}.log" 2>&1 8>&- 9>&- &
    echo $! >"${PIDS}/${name}.pid"
    sleep 0.2
    pid_of "${name}" >/dev/null || { tail -n 20 "${LOGS}/${name}.log" >&2; return 1; }
}

# Exited counts as gone even before PID 1 reaps it (here PID 1 reaps zombies only now and then).
proc_alive() {
    local st
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n "${st}" && "${st}" != Z && "${st}" != X ]]
}

stop_component() {
    local name=$1 pid i t0
    t0=$(date +%s.%N)
    pid=$(pid_of "${name}") || { rm -f "${PIDS}/${name}.pid"; return 0; }
    kill -TERM "${pid}" 2>/dev/null || true
    for i in $(seq 1 100); do
        proc_alive "${pid}" || break
        sleep 0.1
    done
    if proc_alive "${pid}"; then
        log "${name} (pid ${pid}) still running after 10 s: SIGKILL"
        kill -KILL "${pid}" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "${PIDS}/${name}.pid"
    log "stopped ${name} (pid ${pid}) in $(elapsed "${t0}")s"
}

# wait_for SECONDS WHAT CMD...: poll CMD until it succeeds.
wait_for() {
    local secs=$1 what=$2; shift 2
    local deadline=$(( $(date +%s) + secs ))
    until "$@" >/dev/null 2>&1; do
        if (( $(date +%s) >= deadline )); then
            log "timed out after ${secs}s waiting for ${what}"
            return 1
        fi
        sleep 0.3
    done
}

# --- certificates -----------------------------------------------------------------------------
gen_key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null && chmod 600 "$1"; }

# issue NAME SUBJECT EKU [SAN]: key + certificate signed by the run's CA.
issue() {
    local name=$1 subj=$2 eku=$3 san=${4:-}
    gen_key "${PKI}/${name}.key"
    openssl req -new -key "${PKI}/${name}.key" -subj "${subj}" -out "${PKI}/${name}.csr" 2>/dev/null
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=${eku}"
        [[ -z "${san}" ]] || echo "subjectAltName=${san}"
    } >"${PKI}/${name}.ext"
    openssl x509 -req -in "${PKI}/${name}.csr" -CA "${PKI}/ca.crt" -CAkey "${PKI}/ca.key" \
        -set_serial "0x$(openssl rand -hex 15)" -days 30 -sha256 -extfile "${PKI}/${name}.ext" \
        -out "${PKI}/${name}.crt" 2>/dev/null
    rm -f "${PKI}/${name}.csr" "${PKI}/${name}.ext"
}

make_pki() {
    [[ -s "${PKI}/admin.crt" ]] && return 0
    command -v openssl >/dev/null || apt_install openssl
    rm -rf "${PKI}"; mkdir -p "${PKI}"; chmod 700 "${PKI}"
    gen_key "${PKI}/ca.key"
    openssl req -x509 -new -key "${PKI}/ca.key" -sha256 -days 30 -subj "/CN=stackpilot-test-ca" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
        -out "${PKI}/ca.crt" 2>/dev/null
    local local_san="IP:127.0.0.1,DNS:localhost"
    issue etcd-server "/CN=stackpilot-etcd" serverAuth,clientAuth "${local_san}"
    issue apiserver-etcd-client "/CN=kube-apiserver-etcd-client" clientAuth
    issue apiserver "/CN=kube-apiserver" serverAuth \
        "${local_san},IP:${SERVICE_CIDR%.*}.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
    issue admin "/O=system:masters/CN=stackpilot-admin" clientAuth
    issue controller-manager "/CN=system:kube-controller-manager" clientAuth
    issue scheduler "/CN=system:kube-scheduler" clientAuth
    issue kubelet-client "/O=system:nodes/CN=system:node:${NODE_NAME}" clientAuth
    issue kubelet-server "/CN=${NODE_NAME}" serverAuth "${local_san},DNS:${NODE_NAME}"
    gen_key "${PKI}/sa.key"
    openssl ec -in "${PKI}/sa.key" -pubout -out "${PKI}/sa.pub" 2>/dev/null
}

# kubeconfig FILE CERTNAME USER: a kubeconfig with context ${CONTEXT} for that client cert.
kubeconfig() {
    local file=$1 cert=$2 user=$3
    local tmp="${file}.tmp"
    cat >"${tmp}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ${CLUSTER_NAME}
  cluster:
    server: ${API_URL}
    certificate-authority-data: $(base64 -w0 "${PKI}/ca.crt")
users:
- name: ${user}
  user:
    client-certificate-data: $(base64 -w0 "${PKI}/${cert}.crt")
    client-key-data: $(base64 -w0 "${PKI}/${cert}.key")
contexts:
- name: ${CONTEXT}
  context:
    cluster: ${CLUSTER_NAME}
    user: ${user}
current-context: ${CONTEXT}
EOF
    chmod 600 "${tmp}"
    mv "${tmp}" "${file}"
}

# --- control plane ----------------------------------------------------------------------------
etcd_healthy() {
    curl -sf --max-time 3 --cacert "${PKI}/ca.crt" --cert "${PKI}/apiserver-etcd-client.crt" \
        --key "${PKI}/apiserver-etcd-client.key" "https://127.0.0.1:${ETCD_CLIENT_PORT}/health" | grep -q '"health":"true"'
}
api_ready() { curl -sf --max-time 3 --cacert "${PKI}/ca.crt" "${API_URL}/readyz" | grep -qx ok; }
local_healthz() { curl -skf --max-time 3 "https://127.0.0.1:$1/healthz" | grep -qx ok; }

start_etcd() {
    pid_of etcd >/dev/null && return 0
    mkdir -p "${RUN_DIR}/etcd"; chmod 700 "${RUN_DIR}/etcd"
    launch etcd "${ETCD_DIR}/bin/etcd" --name stackpilot --data-dir "${RUN_DIR}/etcd" \
        --listen-client-urls "https://127.0.0.1:${ETCD_CLIENT_PORT}" \
        --advertise-client-urls "https://127.0.0.1:${ETCD_CLIENT_PORT}" \
        --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
        --initial-cluster "stackpilot=http://127.0.0.1:${ETCD_PEER_PORT}" \
        --initial-cluster-state new \
        --cert-file "${PKI}/etcd-server.crt" --key-file "${PKI}/etcd-server.key" \
        --trusted-ca-file "${PKI}/ca.crt" --client-cert-auth \
        --unsafe-no-fsync --snapshot-count 10000 --log-level warn \
        || unavailable "etcd did not start (log ${LOGS}/etcd.log)"
    wait_for 30 "etcd health" etcd_healthy || { tail -n 20 "${LOGS}/etcd.log" >&2; unavailable "etcd not healthy (log ${LOGS}/etcd.log)"; }
}

start_apiserver() {
    pid_of kube-apiserver >/dev/null && return 0
    launch kube-apiserver "${K8S_BIN}/kube-apiserver" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "${APISERVER_PORT}" \
        --etcd-servers "https://127.0.0.1:${ETCD_CLIENT_PORT}" \
        --etcd-cafile "${PKI}/ca.crt" --etcd-certfile "${PKI}/apiserver-etcd-client.crt" \
        --etcd-keyfile "${PKI}/apiserver-etcd-client.key" \
        --tls-cert-file "${PKI}/apiserver.crt" --tls-private-key-file "${PKI}/apiserver.key" \
        --client-ca-file "${PKI}/ca.crt" \
        --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
        --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
        --service-account-key-file "${PKI}/sa.pub" --service-account-signing-key-file "${PKI}/sa.key" \
        --service-cluster-ip-range "${SERVICE_CIDR}" \
        --kubelet-client-certificate "${PKI}/apiserver-kubelet-client.crt" \
        --kubelet-client-key "${PKI}/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority "${PKI}/ca.crt" \
        --kubelet-preferred-address-types InternalIP \
        --endpoint-reconciler-type none \
        --allow-privileged=true --profiling=false --v=1 \
        || unavailable "kube-apiserver did not start (log ${LOGS}/kube-apiserver.log)"
    wait_for 120 "kube-apiserver /readyz" api_ready || { tail -n 30 "${LOGS}/kube-apiserver.log" >&2; unavailable "kube-apiserver not ready (log ${LOGS}/kube-apiserver.log)"; }
}

start_controllers() {
    if ! pid_of kube-controller-manager >/dev/null; then
        kubeconfig "${RUN_DIR}/controller-manager.kubeconfig" controller-manager system:kube-controller-manager
        launch kube-controller-manager "${K8S_BIN}/kube-controller-manager" \
            --kubeconfig "${RUN_DIR}/controller-manager.kubeconfig" \
            --authentication-kubeconfig "${RUN_DIR}/controller-manager.kubeconfig" \
            --authorization-kubeconfig "${RUN_DIR}/controller-manager.kubeconfig" \
            --bind-address 127.0.0.1 --secure-port "${CM_PORT}" \
            --service-account-private-key-file "${PKI}/sa.key" --root-ca-file "${PKI}/ca.crt" \
            --use-service-account-credentials \
            --cluster-signing-cert-file "${PKI}/ca.crt" --cluster-signing-key-file "${PKI}/ca.key" \
            --service-cluster-ip-range "${SERVICE_CIDR}" --allocate-node-cidrs=false \
            --leader-elect=false --profiling=false --v=1 \
            || unavailable "kube-controller-manager did not start (log ${LOGS}/kube-controller-manager.log)"
    fi
    if ! pid_of kube-scheduler >/dev/null; then
        kubeconfig "${RUN_DIR}/scheduler.kubeconfig" scheduler system:kube-scheduler
        launch kube-scheduler "${K8S_BIN}/kube-scheduler" \
            --kubeconfig "${RUN_DIR}/scheduler.kubeconfig" \
            --authentication-kubeconfig "${RUN_DIR}/scheduler.kubeconfig" \
            --authorization-kubeconfig "${RUN_DIR}/scheduler.kubeconfig" \
            --bind-address 127.0.0.1 --secure-port "${SCHED_PORT}" \
            --leader-elect=false --profiling=false --v=1 \
            || unavailable "kube-scheduler did not start (log ${LOGS}/kube-scheduler.log)"
    fi
    wait_for 60 "kube-controller-manager /healthz" local_healthz "${CM_PORT}" \
        || { tail -n 20 "${LOGS}/kube-controller-manager.log" >&2; unavailable "kube-controller-manager not healthy"; }
    wait_for 60 "kube-scheduler /healthz" local_healthz "${SCHED_PORT}" \
        || { tail -n 20 "${LOGS}/kube-scheduler.log" >&2; unavailable "kube-scheduler not healthy"; }
}

# --- nodes: real kubelet on a private containerd ----------------------------------------------
ctrd_answers() { ctr --address "${CTRD_SOCK}" version >/dev/null 2>&1; }

write_containerd_config() {
    mkdir -p "${CTRD_DIR}/state" "${CTRD_ROOT}" "${CNI_DIR}/net.d" "${CNI_DIR}/ipam"
    cat >"${CTRD_DIR}/config.toml" <<EOF
# Private containerd for kube.sh's kubelet (written by scripts/peers/kube.sh; not Docker's).
version = 2
root = "${CTRD_ROOT}"
state = "${CTRD_DIR}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "${CTRD_SOCK}"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "${STATE_DIR}/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_TAG}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  # Root here lacks CAP_SYS_RESOURCE: lowering oom_score_adj fails (EACCES), and runc then dies
  # with "can't get final child's PID from pipe: EOF" on every sandbox (-998). Restricted, the
  # scores are clamped to containerd's own (0).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    discard_unpacked_layers = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${CNI_DIR}/net.d"
    max_conf_num = 1
EOF
    # One bridge network on a private subnet; `firewall` opens FORWARD for the pods' addresses
    # (Docker sets the FORWARD policy to DROP). No masquerading: pods reach nothing outside.
    cat >"${CNI_DIR}/net.d/10-stackpilot.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "stackpilot",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "${POD_SUBNET}"}]],
        "dataDir": "${CNI_DIR}/ipam"
      }
    },
    {"type": "firewall", "backend": "iptables"}
  ]
}
EOF
}

write_kubelet_config() {
    mkdir -p "${KUBELET_ROOT}/pki" "${RUN_DIR}/pod-logs"
    kubeconfig "${RUN_DIR}/kubelet.kubeconfig" kubelet-client "system:node:${NODE_NAME}"
    cat >"${RUN_DIR}/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: ${KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${KUBELET_HEALTHZ_PORT}
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "${PKI}/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "${PKI}/kubelet-server.crt"
tlsPrivateKeyFile: "${PKI}/kubelet-server.key"
containerRuntimeEndpoint: "unix://${CTRD_SOCK}"
imageServiceEndpoint: "unix://${CTRD_SOCK}"
# This machine: cgroup v1, no systemd as PID 1, no swap accounting wanted.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
# No systemd-logind to take inhibitor locks from.
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
# Imported images are the only images (no registry): never garbage-collect them; no
# disk-pressure evictions on a build machine whose disk others fill.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"}
podLogsDir: "${RUN_DIR}/pod-logs"
resolvConf: /etc/resolv.conf
maxPods: 30
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
staticPodPath: ""
EOF
}

# sync_image IMAGE: copy IMAGE from the test dockerd into containerd's k8s.io namespace unless
# containerd already holds the same image id (its config digest).
sync_image() {
    local img=$1 want have
    want=$(docker image inspect -f '{{.Id}}' "${img}" 2>/dev/null) \
        || unavailable "image ${img} is not in the test dockerd (DOCKER_HOST=${DOCKER_HOST:-}); run scripts/test-env.sh"
    have=$(cri inspecti -o json "${img}" 2>/dev/null | sed -n 's/^    "id": "\(sha256:[0-9a-f]*\)",$/\1/p' | head -n1 || true)
    if [[ "${have}" == "${want}" ]]; then IMPORTED+=("${img}=cached"); return 0; fi
    local t0; t0=$(date +%s.%N)
    docker save "${img}" | ctr_k8s images import --no-unpack=false - >/dev/null \
        || unavailable "docker save ${img} | ctr images import failed"
    IMPORTED+=("${img}=imported($(elapsed "${t0}")s)")
}

import_images() {
    IMPORTED=()
    ctr_k8s images import "${PAUSE_DIR}/pause.oci.tar" >/dev/null || unavailable "ctr images import of the pause image failed"
    local images="${STACKPILOT_KUBE_IMAGES-stackpilot-test/busybox:1 stackpilot-test/postgres:15}"
    [[ -n "${images}" ]] || return 0
    if [[ -z "${DOCKER_HOST:-}" && -r "${TEST_ENV_FILE}" ]]; then
        # shellcheck disable=SC1090
        . "${TEST_ENV_FILE}"
    fi
    command -v docker >/dev/null && timeout 10 docker version >/dev/null 2>&1 \
        || unavailable "no test dockerd answers (${TEST_ENV_FILE} missing or stale): run scripts/test-env.sh first, or set STACKPILOT_KUBE_IMAGES=''"
    local img
    for img in ${images}; do sync_image "${img}"; done
    log "images: ${IMPORTED[*]}"
}

node_ready() {
    [[ "$(kc get node "${NODE_NAME}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# kubelet_possible: the reasons a kubelet cannot run here, on stdout (empty: it can).
kubelet_blockers() {
    [[ $(id -u) -eq 0 ]] || echo "not root"
    [[ -x "${K8S_BIN}/kubelet" ]] || echo "no kubelet built (${K8S_BIN}/kubelet)"
    [[ -x "${CRICTL}" ]] || echo "no crictl built"
    [[ -s "${PAUSE_DIR}/pause.oci.tar" ]] || echo "no pause image built"
    command -v containerd >/dev/null || echo "no containerd (package containerd)"
    command -v runc >/dev/null || echo "no runc (package runc)"
    [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/firewall ]] || echo "no CNI plugins in /usr/lib/cni (package containernetworking-plugins)"
    local c
    for c in cpu cpuacct cpuset memory pids; do
        if [[ -d "/sys/fs/cgroup/${c}" ]]; then
            mkdir -p "/sys/fs/cgroup/${c}/stackpilot-kube-probe" 2>/dev/null && rmdir "/sys/fs/cgroup/${c}/stackpilot-kube-probe" \
                || echo "cannot create a cgroup under /sys/fs/cgroup/${c}"
        elif [[ ! -f /sys/fs/cgroup/cgroup.controllers ]]; then
            echo "no ${c} cgroup controller mounted"
        fi
    done
}

start_kubelet_node() {
    if ! pid_of containerd >/dev/null; then
        write_containerd_config
        launch containerd containerd --config "${CTRD_DIR}/config.toml" \
            || { NODE_FAIL="containerd did not start: $(tail -n 5 "${LOGS}/containerd.log")"; return 1; }
        wait_for 30 "containerd" ctrd_answers || { NODE_FAIL="containerd did not answer: $(tail -n 5 "${LOGS}/containerd.log")"; return 1; }
    fi
    printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 30\n' "${CTRD_SOCK}" "${CTRD_SOCK}" >"${RUN_DIR}/crictl.yaml"
    import_images
    if ! pid_of kubelet >/dev/null; then
        write_kubelet_config
        launch kubelet "${K8S_BIN}/kubelet" --config "${RUN_DIR}/kubelet.yaml" \
            --kubeconfig "${RUN_DIR}/kubelet.kubeconfig" --root-dir "${KUBELET_ROOT}" \
            --cert-dir "${KUBELET_ROOT}/pki" --hostname-override "${NODE_NAME}" --node-ip 127.0.0.1 \
            --v=1 || { NODE_FAIL="kubelet exited at once: $(tail -n 5 "${LOGS}/kubelet.log")"; return 1; }
    fi
    # The kubelet refuses a loopback --node-ip ("nodeIP can't be loopback address") and then
    # publishes no address at all, so the API server could not reach it for logs/exec. Its
    # address setter fails before touching status.addresses, so an address written here stays.
    wait_for 60 "node ${NODE_NAME} registered" kc get node "${NODE_NAME}" \
        || { NODE_FAIL="kubelet did not register node ${NODE_NAME}: $(grep -E '^E[0-9]{4}' "${LOGS}/kubelet.log" | tail -n 5)"; return 1; }
    kc patch node "${NODE_NAME}" --subresource=status --type=merge \
        -p '{"status":{"addresses":[{"type":"InternalIP","address":"127.0.0.1"},{"type":"Hostname","address":"'"${NODE_NAME}"'"}]}}' >/dev/null \
        || { NODE_FAIL="could not set the node's address to 127.0.0.1"; return 1; }
    if ! wait_for 120 "node ${NODE_NAME} Ready (kubelet)" node_ready; then
        NODE_FAIL="node ${NODE_NAME} not Ready after 120 s; kubelet log: $(grep -E '^E[0-9]{4}' "${LOGS}/kubelet.log" | tail -n 5)"
        pid_of kubelet >/dev/null || NODE_FAIL="kubelet exited: $(tail -n 8 "${LOGS}/kubelet.log")"
        return 1
    fi
    probe_pod
}

# A Ready node does not prove that pods run (a runtime that cannot create sandboxes still
# reports Ready): run the pause image as a pod, bound to the node, and wait for it to be Ready.
probe_pod() {
    local p=stackpilot-node-probe
    wait_for 60 "the kube-system default ServiceAccount" kc -n kube-system get serviceaccount default \
        || { NODE_FAIL="no kube-system/default ServiceAccount"; return 1; }
    kc -n kube-system delete pod "${p}" --ignore-not-found --grace-period=0 --force >/dev/null 2>&1 || true
    kc apply -f - >/dev/null <<EOF || { NODE_FAIL="could not create the probe pod"; return 1; }
apiVersion: v1
kind: Pod
metadata: {name: ${p}, namespace: kube-system}
spec:
  nodeName: ${NODE_NAME}
  terminationGracePeriodSeconds: 0
  automountServiceAccountToken: false
  dnsPolicy: Default
  containers: [{name: pause, image: "${PAUSE_TAG}", imagePullPolicy: Never}]
EOF
    # Ready, or the first warning the kubelet reports for it (sandbox/container/image failures).
    local deadline=$(( $(date +%s) + 60 )) warn=""
    until [[ "$(kc -n kube-system get pod "${p}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]; do
        warn=$(kc -n kube-system get events --field-selector "involvedObject.name=${p},type=Warning" \
            -o jsonpath='{range .items[*]}{.reason}: {.message}{"\n"}{end}' 2>/dev/null | head -n 1)
        if [[ -n "${warn}" ]] || (( $(date +%s) >= deadline )); then
            NODE_FAIL="the node is Ready but a pod cannot run on it: ${warn:-not Ready within 60 s}"
            kc -n kube-system delete pod "${p}" --grace-period=0 --force >/dev/null 2>&1 || true
            return 1
        fi
        sleep 0.3
    done
    kc -n kube-system delete pod "${p}" --wait=false >/dev/null 2>&1 || true
}

# --- nodes: kwok (simulated) ------------------------------------------------------------------
start_kwok_node() {
    [[ -x "${KWOK_DIR}/bin/kwok" && -s "${KWOK_DIR}/stages.yaml" ]] || unavailable "kwok not built (${KWOK_DIR}): run scripts/peers/kube.sh build"
    if ! pid_of kwok >/dev/null; then
        launch kwok "${KWOK_DIR}/bin/kwok" --kubeconfig "${ADMIN_KUBECONFIG}" \
            --config "${KWOK_DIR}/stages.yaml" --node-lease-duration-seconds 40 \
            --manage-single-node "${NODE_NAME}" \
            --node-ip 127.0.0.1 --node-port "${KUBELET_PORT}" --cidr 10.215.0.0/24 \
            --server-address "127.0.0.1:${KWOK_PORT}" \
            || unavailable "kwok did not start (log ${LOGS}/kwok.log)"
    fi
    kc apply -f - >/dev/null <<EOF || unavailable "could not create the kwok node object"
apiVersion: v1
kind: Node
metadata:
  name: ${NODE_NAME}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: ${NODE_NAME}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
EOF
    wait_for 60 "node ${NODE_NAME} Ready (kwok)" node_ready \
        || { tail -n 20 "${LOGS}/kwok.log" >&2; unavailable "kwok node not Ready (log ${LOGS}/kwok.log)"; }
}

# Stop every pod sandbox through CRI (CNI teardown, containers, shims), then the daemons.
stop_kubelet_node() {
    stop_component kubelet
    if pid_of containerd >/dev/null && [[ -x "${CRICTL}" ]]; then
        local p
        for p in $(cri pods -q 2>/dev/null); do
            cri stopp "${p}" >/dev/null 2>&1 || log "crictl stopp ${p} failed"
            cri rmp "${p}" >/dev/null 2>&1 || log "crictl rmp ${p} failed"
        done
    fi
    stop_component containerd
}

# --- cluster objects --------------------------------------------------------------------------
# A default StorageClass with pre-made hostPath PVs (no provisioner needed): any PVC of up to
# 5Gi binds. Retain: a released PV keeps its data and is not reused (the pool is per cluster).
make_storage() {
    local i pvs=""
    mkdir -p "${PV_DIR}"
    for i in $(seq 0 $((PV_COUNT - 1))); do
        pvs+="---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: ${STORAGE_CLASS}-pv${i}
  labels: {stackpilot.io/pool: ${STORAGE_CLASS}}
spec:
  storageClassName: ${STORAGE_CLASS}
  capacity: {storage: 5Gi}
  accessModes: [ReadWriteOnce, ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: ${PV_DIR}/pv${i}, type: DirectoryOrCreate}
"
    done
    kc apply -f - >/dev/null <<EOF || unavailable "could not create the StorageClass and PVs"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: ${STORAGE_CLASS}
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
reclaimPolicy: Retain
${pvs}
EOF
}

write_env() {
    local mode=$1 tmp="${ENV_FILE}.tmp.$$"
    {
        echo "# written by scripts/peers/kube.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "export KUBECONFIG=${ADMIN_KUBECONFIG}"
        echo "export STACKPILOT_KUBE_CONTEXT=${CONTEXT}"
        echo "export STACKPILOT_KUBE_NODE_MODE=${mode}"
        echo "export STACKPILOT_KUBE_API=${API_URL}"
        echo "export STACKPILOT_KUBE_NODE=${NODE_NAME}"
        echo "export STACKPILOT_KUBE_STORAGE_CLASS=${STORAGE_CLASS}"
        echo "export STACKPILOT_KUBE_VERSION=${K8S_VERSION}"
        echo "export STACKPILOT_KUBECTL=${KUBECTL}"
        echo "export STACKPILOT_HELM=${HELM_DIR}/bin/helm"
        echo "export STACKPILOT_KUBERNETES_VALIDATE=${KVALIDATE_DIR}/venv/bin/kubernetes-validate"
        echo "export STACKPILOT_TEST_KUBE=1"
    } >"${tmp}"
    mv "${tmp}" "${ENV_FILE}"
}

running_mode() { cat "${RUN_DIR}/mode" 2>/dev/null || true; }

# Healthy: every daemon of the recorded mode alive, the API ready, the node Ready.
cluster_healthy() {
    local mode c
    mode=$(running_mode)
    [[ -n "${mode}" && -r "${ENV_FILE}" ]] || return 1
    for c in etcd kube-apiserver kube-controller-manager kube-scheduler; do pid_of "${c}" >/dev/null || return 1; done
    if [[ "${mode}" == kubelet ]]; then
        pid_of containerd >/dev/null && pid_of kubelet >/dev/null || return 1
    else
        pid_of kwok >/dev/null || return 1
    fi
    api_ready && node_ready
}

check_built() {
    local f missing=()
    for f in "${K8S_BIN}/kube-apiserver" "${K8S_BIN}/kube-controller-manager" "${K8S_BIN}/kube-scheduler" \
             "${K8S_BIN}/kubectl" "${ETCD_DIR}/bin/etcd"; do
        [[ -x "${f}" ]] || missing+=("${f}")
    done
    [[ ${#missing[@]} -eq 0 ]] || unavailable "not built: ${missing[*]} (run scripts/peers/kube.sh build; cold about an hour on 2 cores)"
    command -v curl >/dev/null || apt_install curl
    command -v openssl >/dev/null || apt_install openssl
}

cmd_start() {
    need_root "starting the test cluster"
    check_built
    mkdir -p "${RUN_DIR}"; chmod 755 "${RUN_DIR}"
    { exec 9>>"${LOCK_FILE}"; } || unavailable "cannot open ${LOCK_FILE}"
    flock -w 600 9 || unavailable "timed out waiting for another kube.sh start/stop"
    if cluster_healthy; then
        log "already running ($(running_mode) node); nothing to do"
        cat "${ENV_FILE}"
        return 0
    fi
    local any=0 c
    for c in "${COMPONENTS[@]}"; do pid_of "${c}" >/dev/null && any=1; done
    if [[ ${any} -eq 1 ]]; then
        log "a partial or unhealthy cluster is recorded in ${RUN_DIR}: stopping it first"
        do_stop
    fi
    if [[ -d "${LOGS}" ]]; then rm -rf "${LOGS}.prev"; mv "${LOGS}" "${LOGS}.prev"; fi
    mkdir -p "${LOGS}" "${PIDS}"

    local want="${STACKPILOT_KUBE_NODE_MODE:-auto}" t_api t_node
    case "${want}" in auto|kubelet|kwok) ;; *) unavailable "STACKPILOT_KUBE_NODE_MODE=${want}: want auto, kubelet or kwok" ;; esac

    # Whatever fails from here on (every failure path exits): stop what this start started.
    trap 'rc=$?; if [[ ${rc} -ne 0 ]]; then log "start failed (exit ${rc}): stopping what it started"; do_stop; fi' EXIT
    make_pki
    kubeconfig "${ADMIN_KUBECONFIG}" admin stackpilot-admin
    start_etcd
    start_apiserver
    t_api=$(elapsed "${SCRIPT_T0}")
    log "kube-apiserver ready at ${API_URL} after ${t_api}s"
    start_controllers

    local mode="" blockers
    if [[ "${want}" != kwok ]]; then
        blockers=$(kubelet_blockers)
        if [[ -n "${blockers}" ]]; then
            [[ "${want}" == kubelet ]] && unavailable "a real kubelet cannot run here: ${blockers//$'\n'/; }"
            log "no real kubelet: ${blockers//$'\n'/; }; using kwok"
        else
            NODE_FAIL=""
            if start_kubelet_node; then
                mode=kubelet
            else
                [[ "${want}" == kubelet ]] && unavailable "real kubelet failed: ${NODE_FAIL}"
                log "real kubelet failed: ${NODE_FAIL}; falling back to kwok"
                stop_kubelet_node
                kc delete node "${NODE_NAME}" --ignore-not-found >/dev/null 2>&1 || true
            fi
        fi
    fi
    if [[ -z "${mode}" ]]; then
        start_kwok_node
        mode=kwok
    fi
    echo "${mode}" >"${RUN_DIR}/mode"
    t_node=$(elapsed "${SCRIPT_T0}")
    log "node ${NODE_NAME} Ready (${mode}) after ${t_node}s"
    make_storage
    wait_for 60 "the default ServiceAccount" kc get serviceaccount default -n default \
        || unavailable "the controller-manager created no default ServiceAccount (log ${LOGS}/kube-controller-manager.log)"
    write_env "${mode}"
    trap - EXIT
    log "started: ${K8S_VERSION}, node mode ${mode}; API ready ${t_api}s, node Ready ${t_node}s, all done $(elapsed "${SCRIPT_T0}")s"
    log "env: ${ENV_FILE}   (eval \"\$(scripts/peers/kube.sh env)\")"
    cat "${ENV_FILE}"
}

# The CNI firewall plugin leaves its CNI-FORWARD/CNI-ADMIN chains and a FORWARD jump behind
# (and adds another jump per run). Remove them when nobody else has rules in them.
cleanup_cni_firewall() {
    command -v iptables >/dev/null || return 0
    iptables -S CNI-FORWARD >/dev/null 2>&1 || return 0
    local others
    others=$(iptables -S CNI-FORWARD 2>/dev/null | grep -c -- '^-A CNI-FORWARD' || true)
    if [[ "${others}" -gt 1 ]] || [[ $(iptables -S CNI-ADMIN 2>/dev/null | grep -c -- '^-A' || true) -gt 0 ]]; then
        return 0   # someone else's pods still have rules there
    fi
    while iptables -D FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD 2>/dev/null; do :; done
    iptables -F CNI-FORWARD 2>/dev/null && iptables -X CNI-FORWARD 2>/dev/null || true
    iptables -X CNI-ADMIN 2>/dev/null || true
}

# Unmount whatever kubelet/containerd left mounted below the run dir (deepest first).
unmount_below_run_dir() {
    local m
    while read -r m; do
        umount "${m}" 2>/dev/null || umount -l "${m}" 2>/dev/null || log "could not unmount ${m}"
    done < <(awk -v d="${RUN_DIR}/" 'index($5, d) == 1 {print length($5), $5}' /proc/self/mountinfo | sort -rn | cut -d' ' -f2-)
}

do_stop() {
    stop_component kwok
    stop_kubelet_node
    stop_component kube-scheduler
    stop_component kube-controller-manager
    stop_component kube-apiserver
    stop_component etcd
    unmount_below_run_dir
    if ip link show "${BRIDGE}" >/dev/null 2>&1; then ip link del "${BRIDGE}" 2>/dev/null || log "could not delete bridge ${BRIDGE}"; fi
    cleanup_cni_firewall
    # The kubelet's links in /var/log/containers (a fixed path) that point into our run dir.
    local l
    for l in /var/log/containers/*.log; do
        if [[ -L "${l}" && "$(readlink "${l}")" == "${RUN_DIR}/"* ]]; then rm -f "${l}"; fi
    done
    # Empty cgroups the kubelet made (kubepods and its QoS/pod children); busy ones stay.
    local c
    for c in /sys/fs/cgroup/*/kubepods; do
        [[ -d "${c}" ]] && find "${c}" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    if awk -v d="${RUN_DIR}/" 'index($5, d) == 1 {found=1} END {exit !found}' /proc/self/mountinfo; then
        log "mounts remain below ${RUN_DIR}; cluster state kept (not deleting through a mount)"
        return 0
    fi
    local f
    for f in "${RUN_DIR}"/* ; do
        [[ -e "${f}" ]] || continue
        case "${f}" in "${LOGS}"|"${LOGS}.prev") continue ;; esac
        rm -rf --one-file-system "${f}"
    done
}

cmd_stop() {
    need_root "stopping the test cluster"
    [[ -d "${RUN_DIR}" ]] || { log "nothing recorded in ${RUN_DIR}; nothing to stop"; return 0; }
    { exec 9>>"${LOCK_FILE}"; } || unavailable "cannot open ${LOCK_FILE}"
    flock -w 600 9 || unavailable "timed out waiting for another kube.sh start/stop"
    do_stop
    log "stopped in $(elapsed "${SCRIPT_T0}")s (logs kept in ${LOGS}; images kept in ${CTRD_ROOT})"
}

cmd_status() {
    local c pid any=0
    for c in "${COMPONENTS[@]}"; do
        if pid=$(pid_of "${c}"); then echo "${c}: running pid ${pid}"; any=1; fi
    done
    if [[ ${any} -eq 0 ]]; then echo "not running"; return 1; fi
    echo "mode: $(running_mode)"
    if [[ -s "${PKI}/ca.crt" ]] && api_ready; then echo "api: ready at ${API_URL}"; else echo "api: not ready"; fi
    kc get nodes -o wide 2>/dev/null || true
    cluster_healthy || { echo "unhealthy"; return 1; }
}

cmd_env() {
    if [[ -r "${ENV_FILE}" ]] && cluster_healthy; then
        grep '^export ' "${ENV_FILE}"
    else
        unavailable "no healthy cluster (run scripts/peers/kube.sh start)"
    fi
}

# --- selftest ---------------------------------------------------------------------------------
# Proves the running cluster: a busybox Deployment to Ready, a postgres StatefulSet with a PVC,
# then (real kubelet) `kubectl logs` and `kubectl exec ... pg_dump`. Cleans up after itself.
cmd_selftest() {
    cluster_healthy || unavailable "no healthy cluster (run scripts/peers/kube.sh start)"
    local mode ns=stackpilot-selftest t0 pvdir="${PV_DIR}/selftest-$$"
    mode=$(running_mode)
    t0=$(date +%s.%N)
    kc delete namespace "${ns}" --ignore-not-found --wait=true >/dev/null
    kc delete pv stackpilot-selftest-pv --ignore-not-found >/dev/null
    mkdir -p "${pvdir}"
    kc apply -f - <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: ${ns}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: stackpilot-selftest-pv}
spec:
  storageClassName: stackpilot-selftest
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {path: ${pvdir}, type: DirectoryOrCreate}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: bb, namespace: ${ns}}
spec:
  replicas: 2
  selector: {matchLabels: {app: bb}}
  template:
    metadata: {labels: {app: bb}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: bb
        image: stackpilot-test/busybox:1
        imagePullPolicy: Never
        command: ["sh", "-c", "echo selftest-busybox-up; mkdir -p /tmp/www; echo ok >/tmp/www/index.html; exec httpd -f -p 8080 -h /tmp/www"]
        readinessProbe:
          exec: {command: ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/index.html"]}
          periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata: {name: pg, namespace: ${ns}}
spec:
  clusterIP: None
  selector: {app: pg}
  ports: [{name: pg, port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: pg, namespace: ${ns}}
spec:
  serviceName: pg
  replicas: 1
  selector: {matchLabels: {app: pg}}
  template:
    metadata: {labels: {app: pg}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: pg
        image: stackpilot-test/postgres:15
        imagePullPolicy: Never
        ports: [{containerPort: 5432, name: pg}]
        readinessProbe:
          exec: {command: ["pg_isready", "-h", "127.0.0.1", "-d", "postgres", "-q"]}
          periodSeconds: 2
        volumeMounts: [{name: data, mountPath: /var/lib/postgresql/data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      storageClassName: stackpilot-selftest
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
EOF
    local ok=1
    kc -n "${ns}" rollout status deployment/bb --timeout=180s || ok=0
    kc -n "${ns}" rollout status statefulset/pg --timeout=240s || ok=0
    kc -n "${ns}" get pods,pvc -o wide || true
    if [[ ${ok} -eq 1 && "${mode}" == kubelet ]]; then
        kc -n "${ns}" logs deployment/bb | grep -q selftest-busybox-up && log "selftest: kubectl logs deployment/bb ok" \
            || { log "selftest: kubectl logs deployment/bb lacks the marker"; ok=0; }
        kc -n "${ns}" exec pg-0 -- psql -q -v ON_ERROR_STOP=1 -c 'CREATE TABLE selftest(v text); INSERT INTO selftest VALUES ($$kube-selftest$$);' postgres \
            || ok=0
        local dump
        dump=$(kc -n "${ns}" exec pg-0 -- pg_dump postgres) || ok=0
        if grep -q 'kube-selftest' <<<"${dump}"; then
            log "selftest: kubectl exec pg-0 -- pg_dump ok ($(wc -c <<<"${dump}") bytes, has the row)"
        else
            log "selftest: pg_dump output lacks the row"; ok=0
        fi
        kc -n "${ns}" logs pg-0 | grep -q 'ready to accept connections' && log "selftest: kubectl logs pg-0 ok" \
            || { log "selftest: kubectl logs pg-0 lacks 'ready to accept connections'"; ok=0; }
        [[ -s "${pvdir}/PG_VERSION" ]] && log "selftest: the PVC's hostPath holds the cluster (${pvdir})" \
            || { log "selftest: no PG_VERSION in ${pvdir}"; ok=0; }
    elif [[ ${ok} -eq 1 ]]; then
        log "selftest: kwok node: pods are simulated (no logs/exec)"
    fi
    if [[ ${ok} -ne 1 ]]; then
        kc -n "${ns}" describe pods | tail -n 40 >&2 || true
    fi
    kc delete namespace "${ns}" --wait=true --timeout=120s >/dev/null || true
    kc delete pv stackpilot-selftest-pv --ignore-not-found >/dev/null || true
    rm -rf --one-file-system "${pvdir}"
    if [[ ${ok} -ne 1 ]]; then
        log "selftest FAILED (${mode} node)"   # a failed check is a failure, CI or not
        exit 1
    fi
    log "selftest passed (${mode} node) in $(elapsed "${t0}")s"
}

case "${1:-}" in
    build) cmd_build ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    selftest) cmd_selftest ;;
    *) echo "usage: $0 build|start|stop|status|env|selftest" >&2; exit 2 ;;
esac
