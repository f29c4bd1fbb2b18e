#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine or a warm one:
#   1. a real Docker engine, Compose v2 and the local test images (scripts/test-env.sh:
#      installs docker.io and Compose v2 when missing, starts a private dockerd, builds
#      images only when they are not cached);
#   2. the official MCP tools as test peers (scripts/peers/mcp-tools.sh: the conformance
#      suite, the Inspector CLI, kubernetes-mcp-server, mcpb), cached outside the clone;
#   2b. the Kubernetes test cluster (scripts/peers/kube.sh build + start; stopped at the end);
#   3. every Rust test (unit, integration through real MCP clients, the Python `mcp` SDK
#      suite in a venv it makes, the Docker tests), closed by cargo's own summary.
# Under CI=true anything missing fails loudly; elsewhere the Docker tests are skipped
# with a printed reason when no engine can be had.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
rc=0
# shellcheck source=scripts/test-env.sh
. scripts/test-env.sh start || rc=$?
if [[ $rc -eq 3 ]]; then
    echo "test.sh: no Docker engine here: Docker tests will be skipped (they never are under CI=true)" >&2
elif [[ $rc -ne 0 ]]; then
    echo "test.sh: FATAL: the test environment could not be prepared (exit $rc)" >&2
    exit "$rc"
fi

# The official MCP tools the tests talk to (conformance suite, Inspector CLI,
# kubernetes-mcp-server, mcpb): installed from npm into a cache outside the clone, keyed by
# version and lock file (scripts/peers/README.md). Cold: about a minute; warm: about a second.
peers_rc=0
bash scripts/peers/mcp-tools.sh install || peers_rc=$?
if [[ $peers_rc -eq 0 ]]; then
    eval "$(bash scripts/peers/mcp-tools.sh env)"
elif [[ $peers_rc -eq 3 ]]; then
    echo "test.sh: the MCP peer tools are not available: conformance, Inspector and mcpb tests will be skipped (they never are under CI=true)" >&2
else
    echo "test.sh: FATAL: the MCP peer tools could not be installed (exit $peers_rc)" >&2
    exit "$peers_rc"
fi

# The Kubernetes test cluster (scripts/peers/kube.sh: kube-apiserver, controller-manager,
# scheduler, etcd and a real kubelet built from Go modules, plus kubectl, helm and
# kubernetes-validate), built once into /var/cache/stackpilot-peers keyed by version (cold
# about 23 min, cached 0.4 s), started for this run (11-28 s; a no-op when it runs already)
# with the test dockerd's images imported, and stopped when the run ends.
kube_rc=0
scripts/peers/kube.sh build >&2 || kube_rc=$?
if [[ $kube_rc -eq 0 ]]; then
    scripts/peers/kube.sh start >/dev/null || kube_rc=$?
fi
if [[ $kube_rc -eq 0 ]]; then
    trap 'scripts/peers/kube.sh stop >&2 || true' EXIT
elif [[ "${CI:-}" == "true" ]]; then
    echo "test.sh: FATAL (CI=true): the Kubernetes test cluster could not be built or started (exit $kube_rc)" >&2
    exit 1
else
    echo "test.sh: no Kubernetes test cluster (exit $kube_rc): the cluster tests will be skipped (never under CI=true)" >&2
fi

if ! command -v python3 >/dev/null; then
    if [[ "${CI:-}" == "true" ]]; then
        echo "test.sh: FATAL (CI=true): python3 is missing (the Python mcp SDK tests need it)" >&2
        exit 1
    fi
fi

# CI works in a fresh clone each time: keep the cargo build cache outside it, so only what
# changed is rebuilt (a new machine starts cold and still fits the 90 minutes).
if [[ "${CI:-}" == "true" && -z "${CARGO_TARGET_DIR:-}" ]]; then
    export CARGO_TARGET_DIR=/var/tmp/stackpilot-ci-target
fi

echo "test.sh: environment ready in $(( $(date +%s) - started ))s; running cargo test" >&2
# One test binary at a time keeps 2 cores from thrashing; tests inside a binary run in parallel.
# set -e would end the script on a failed test run before the summary: keep going, then exit
# with cargo's status after the `N passed, N failed` line.
set +e
cargo test --all-targets --no-fail-fast -- --test-threads="${TEST_THREADS:-4}" 2>&1 | tee /tmp/stackpilot-test.log
status=${PIPESTATUS[0]}
set -e

passed=$(grep -Eo '^test result: [A-Za-z]+\. [0-9]+ passed' /tmp/stackpilot-test.log | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' /tmp/stackpilot-test.log | awk '{s+=$1} END {print s+0}')
if [[ ${status} -ne 0 && ${failed} -eq 0 ]]; then
    # Nothing reported a failed test, yet cargo failed (a build error, a crashed test binary):
    # that is one failure, not a pass.
    echo "test.sh: cargo test exited with ${status} without a failed test (build error or crash); counted as 1 failure" >&2
    failed=1
fi
echo "test.sh: finished in $(( $(date +%s) - started ))s"
echo "${passed} passed, ${failed} failed"
exit "$status"
