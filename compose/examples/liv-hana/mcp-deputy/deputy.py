"""mcp-deputy: Liv Hana's automation. Every DEPUTY_INTERVAL_S it lists mcp-core's tools over
MCP and records the run, then touches the heartbeat its health check reads. Standard library
only."""
import json
import os
import time
import urllib.request

CORE = os.environ.get("MCP_CORE_URL", "http://mcp-core:8080").rstrip("/")
INTERVAL = float(os.environ.get("DEPUTY_INTERVAL_S", "15"))
HEARTBEAT = "/tmp/deputy-heartbeat"


def rpc(method, params=None, rid=1):
    body = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}).encode()
    req = urllib.request.Request(CORE + "/mcp", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.load(r)


while True:
    try:
        tools = [t["name"] for t in rpc("tools/list")["result"]["tools"]]
        print(json.dumps({"event": "deputy_run", "core_tools": tools}), flush=True)
        with open(HEARTBEAT, "w") as f:
            f.write(str(time.time()))
    except (OSError, ValueError, KeyError) as e:
        print(json.dumps({"event": "deputy_run_failed", "error": str(e)}), flush=True)
    time.sleep(INTERVAL)
