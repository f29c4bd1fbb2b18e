#!/usr/bin/env bash
# 50 concurrent HTTP clients calling detect_hardware against a release build, with wrk
# (a C load generator, so the clients cost little of the 2 cores the server also uses).
# Each request is a complete, stateless 2026-07-28 tools/call POST; every reply is checked
# for a structured result, and any non-200 or error reply is counted as an error.
# Usage: benches/http_load.sh [seconds] [connections]   (default 10 s, 50 connections)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"; conns="${2:-50}"
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
cargo build --release -q
stack=$(mktemp -d); touch "$stack/.env"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
STACKPILOT_LOG=warn target/release/stackpilot serve --http "127.0.0.1:$port" --stack "$stack" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$stack"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
lua=$(mktemp --suffix=.lua)
cat > "$lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = "detect_hardware"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"detect_hardware","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"wrk","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}'
threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args) bad = 0 end
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, '"structuredContent"', 1, true) or string.find(body, '"isError":true', 1, true) then
    bad = bad + 1
  end
end
done = function(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("bad") end
  io.write(string.format("calls/s %.0f, errors %d (+%d socket), median latency %.2f ms, p99 %.2f ms\n",
    summary.requests / (summary.duration / 1e6), bad + summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA
wrk -t2 -c"$conns" -d"${secs}s" -s "$lua" "http://127.0.0.1:$port/mcp"
rm -f "$lua"
