#!/usr/bin/env bash
# Builds the stackpilot MCP Bundle (.mcpb, https://github.com/anthropics/mcpb, manifest 0.4) that
# Claude Desktop and other MCPB hosts install with one click, checks it with `mcpb validate`, and
# writes the registry's server.json beside it with the bundle's sha256:
#
#   dist/stackpilot-<version>-linux-<arch>.mcpb     manifest.json + server/stackpilot (static)
#   dist/server.json                                 ./server.json plus the mcpb package
#
# Usage: scripts/build-mcpb.sh [--binary PATH] [--out DIR] [--url URL]
#   --binary  the stackpilot binary to bundle (default: scripts/build-static.sh builds one)
#   --out     where the bundle goes (default dist/)
#   --url     where the bundle will be downloaded from (server.json's identifier; default: the
#             release URL pattern of the repository named in server.json)
# Needs python3 and the mcpb CLI (scripts/peers/mcp-tools.sh install; STACKPILOT_MCPB or mcpb).
set -euo pipefail
cd "$(dirname "$0")/.."

binary="" out="dist" url=""
while (($#)); do
    case $1 in
        --binary) binary=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --url) url=$2; shift 2 ;;
        *) echo "usage: $0 [--binary PATH] [--out DIR] [--url URL]" >&2; exit 2 ;;
    esac
done
if [[ -z "${STACKPILOT_MCPB:-}" ]]; then
    eval "$(scripts/peers/mcp-tools.sh env)" 2>/dev/null || true
fi
mcpb=${STACKPILOT_MCPB:-$(command -v mcpb || true)}
[[ -n "$mcpb" ]] || { echo "build-mcpb: no mcpb CLI (scripts/peers/mcp-tools.sh install)" >&2; exit 1; }
[[ -n "$binary" ]] || binary=$(scripts/build-static.sh)

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(uname -m)
work=$(mktemp -d "${TMPDIR:-/tmp}/stackpilot-mcpb.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bundle/server" "$out"
install -m 0755 "$binary" "$work/bundle/server/stackpilot"
python3 scripts/mcpb/manifest.py "$version" > "$work/bundle/manifest.json"
"$mcpb" validate "$work/bundle/manifest.json" >&2
bundle="$out/stackpilot-$version-linux-$arch.mcpb"
rm -f "$bundle"
"$mcpb" pack "$work/bundle" "$bundle" >&2
sha=$(sha256sum "$bundle" | cut -c1-64)
python3 scripts/mcpb/server_json.py server.json "$version" "$sha" "$(basename "$bundle")" "$url" > "$out/server.json"
echo "build-mcpb: $bundle (sha256 $sha); $out/server.json" >&2
echo "$bundle"
